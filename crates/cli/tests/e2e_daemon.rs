//! End to end: the `runner-manager` binary (commands and the `run` daemon) against the GitHub
//! simulator (in-process, on the Incus bridge) and real Incus containers (fake runner tarball),
//! on both images `scripts/incus-env.sh up` imports: `busybox` and `debian/bookworm` (systemd as
//! PID 1, dash as /bin/sh, a `ubuntu` user: like the server images operators run). Each test
//! exists once per image, `busybox::<name>` and `debian::<name>`.
//!
//! The tests that need Incus are `#[ignore]`d, so a plain `cargo test` reports them as ignored,
//! never as passed: `scripts/test.sh` (which brings Incus up and builds the static fake runner)
//! runs them with `--run-ignored all`. `incus_tests_are_ignored_by_default` keeps it that way.
//! Every test has its own simulator, state dir and app name (`e2ec<5 letters>`), so tests run in
//! parallel; a guard deletes every instance of that app, and kills the daemon, even when a test
//! fails.

mod e2e_env;

use std::time::{Duration, Instant};

use e2e_env::*;
use serde_json::{json, Value};

test_support::on_both_images!(
    worker_threads = 2;
    commands_reconcile_status_and_flush_real_runners,
    daemon_webhook_metrics_and_auth,
    sigterm_during_reconcile_leaves_no_half_created_runner,
    daemon_replaces_a_finished_runner_on_the_completed_webhook,
);

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_here(&[
        "incus_tests_are_ignored_by_default",
        "the_openmetrics_parser_rejects_broken_expositions",
    ]);
}

/// The commands on their own: binary update, reconcile to 2, status, an idempotent second
/// reconcile, and flush.
async fn commands_reconcile_status_and_flush_real_runners(image: &str) {
    let env = Env::new(image).await;
    env.write_config(2, None);

    let check = env.run(&["runner-bin", "check"]).await;
    assert_eq!(check.code, Some(1), "no binary yet: {check:#?}");
    let update = env
        .run(&["runner-bin", "update", "--json"])
        .await
        .json("runner-bin update");
    assert_eq!(update["updated"], json!(true), "{update}");
    assert_eq!(
        update["binary"]["filename"],
        json!(format!("actions-runner-linux-x64-{RUNNER_VERSION}.tar.gz"))
    );
    let check = env.run(&["runner-bin", "check"]).await;
    assert_eq!(check.code, Some(0), "binary cached: {check:#?}");

    let first = env.reconcile_until_clean().await;
    assert_eq!(first["quantity"], json!(2), "{first}");
    assert_eq!(first["delta"], json!(2), "{first}");
    assert_eq!(
        first["created"]
            .as_u64()
            .zip(first["failed"].as_u64())
            .map(|(c, f)| c + f),
        Some(2),
        "{first}"
    );
    let online = env.wait_online(2).await;
    assert!(online.iter().all(|r| r.ephemeral && !r.busy), "{online:#?}");

    let status = env.run(&["status", "--json"]).await.json("status");
    let runners = status["runners"].as_array().expect("runners");
    assert_eq!(runners.len(), 2, "{status}");
    let mut names: Vec<&str> = runners
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = online.iter().map(|r| r.name.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "status lists the registered runners");
    for runner in runners {
        assert!(
            runner["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{}-0-", env.app))),
            "{runner}"
        );
        assert_eq!(runner["instance_status"], json!("running"), "{runner}");
        assert_eq!(runner["github_status"], json!("online"), "{runner}");
        assert_eq!(runner["busy"], json!(false), "{runner}");
    }
    assert_eq!(status["dangling"], json!([]), "{status}");
    assert_eq!(status["orphans"], json!([]), "{status}");
    assert_eq!(env.instances().await.len(), 2);

    let second = env
        .run(&["reconcile", "--json"])
        .await
        .json("second reconcile");
    assert_eq!(second["delta"], json!(0), "{second}");
    assert_eq!(second["created"], json!(0), "{second}");
    assert_eq!(second["removed"], json!(0), "{second}");
    assert_eq!(second["failed"], json!(0), "{second}");
    assert_eq!(env.registrations().len(), 2, "still the same two");

    env.flush_all_and_finish(2).await;
}

/// A world whose daemon keeps `quantity` runners on an hourly timer (so only the startup pass,
/// webhooks and POSTs make passes): its base URL and an HTTP client.
async fn hourly_daemon(image: &str, quantity: u32) -> (Env, String, reqwest::Client) {
    let mut env = Env::new(image).await;
    let base = env.start_daemon_on_hourly_timer(quantity);
    (env, base, http())
}

/// The daemon: startup pass, signed and badly signed webhooks, bearer-protected POSTs, metrics
/// that match the fleet, flush over HTTP and a clean stop.
async fn daemon_webhook_metrics_and_auth(image: &str) {
    let (mut env, base, client) = hourly_daemon(image, 1).await;

    // The startup pass updates the binary and creates the runner.
    let passes = daemon_fleet(&client, &base, 1, &env).await;
    assert_eq!(env.instances().await.len(), 1);
    let baseline = get_metrics(&client, &base).await;
    let counter = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
        metric(samples, name, labels) - metric(&baseline, name, labels)
    };

    // A badly signed delivery: 401, and no reconcile asked for.
    let body = workflow_job("queued", 77, &["self-hosted", &env.app]);
    let bad = github_sim::sign_webhook(b"not-the-secret", &body);
    let response = post_webhook(&client, &base, body.clone(), &bad).await;
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("{base}/webhook"))
        .header("x-github-event", "workflow_job")
        .body(body.clone())
        .send()
        .await
        .expect("POST /webhook");
    assert_eq!(response.status(), 401, "an unsigned delivery");
    let samples = get_metrics(&client, &base).await;
    assert_eq!(triggers(&samples, "webhook"), 0.0);
    assert_eq!(job_deliveries(&samples, "unauthorized"), 2.0);

    // A signed `queued` delivery with our labels: a pass starts (the simulator sees its list
    // call) within a second.
    let before = env.list_calls();
    let good = github_sim::sign_webhook(WEBHOOK_SECRET.as_bytes(), &body);
    let sent = Instant::now();
    let response = post_webhook(&client, &base, body, &good).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json answer");
    assert_eq!(answer["outcome"], json!("reconcile_triggered"));
    let ten_seconds = Duration::from_secs(10);
    let every = Duration::from_millis(5);
    let reaction = env
        .eventually("a list call", ten_seconds, every, || async {
            if env.list_calls() > before {
                Ok(sent.elapsed())
            } else {
                Err("no reconcile after the webhook".to_owned())
            }
        })
        .await;
    env.clock
        .mark(&format!("webhook -> list call in {reaction:?}"));
    assert!(
        reaction < Duration::from_secs(1),
        "the webhook's reconcile started after {reaction:?}"
    );
    // A delivery with foreign labels asks for nothing.
    let foreign = workflow_job("queued", 78, &["self-hosted", "windows"]);
    let signature = github_sim::sign_webhook(WEBHOOK_SECRET.as_bytes(), &foreign);
    let response = post_webhook(&client, &base, foreign, &signature).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json answer");
    assert_eq!(answer["outcome"], json!("labels_not_matched"));

    // After that pass the gauges show the fleet as it is: one online idle runner.
    wait_passes(&client, &base, passes + 1, &env).await;
    let samples = get_metrics(&client, &base).await;
    let registrations = env.registrations();
    let idle = registrations
        .iter()
        .filter(|r| r.status == "online" && !r.busy)
        .count();
    let busy = registrations.iter().filter(|r| r.busy).count();
    assert_eq!((idle, busy), (1, 0), "{registrations:#?}");
    let gauge = |state: &str| metric(&samples, "runner_manager_runners", &[("state", state)]);
    assert_eq!(gauge("idle"), 1.0, "idle gauge");
    assert_eq!(gauge("busy"), 0.0, "busy gauge");
    assert_eq!(gauge("booting"), 0.0, "booting gauge");
    assert_eq!(gauge("unhealthy"), 0.0, "unhealthy gauge");
    assert_eq!(
        counter(
            &samples,
            "runner_manager_reconciles_total",
            &[("result", "ok")]
        ),
        1.0,
        "one more ok pass"
    );
    assert_eq!(
        counter(&samples, "runner_manager_runners_created_total", &[]),
        0.0,
        "nothing created"
    );
    assert_eq!(triggers(&samples, "webhook"), 1.0);
    assert_eq!(job_deliveries(&samples, "reconcile_triggered"), 1.0);
    let binary: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "runner_manager_runner_binary_info" && s.value == 1.0)
        .collect();
    assert_eq!(binary.len(), 1, "one binary in use: {binary:?}");
    assert!(
        binary[0]
            .labels
            .values()
            .any(|v| v.contains(RUNNER_VERSION)),
        "{binary:?}"
    );
    assert!(
        metric(&samples, "runner_manager_github_rate_limit_remaining", &[]) > 0.0,
        "rate limit remaining is tracked"
    );

    // GET /runners is the status document.
    let runners = get_json(&client, &format!("{base}/runners")).await;
    assert_eq!(runners["runners"].as_array().map(Vec::len), Some(1));
    assert_eq!(runners["runners"][0]["github_status"], json!("online"));
    assert_eq!(runners["runners"][0]["name"], json!(registrations[0].name));

    // POST endpoints need the bearer token.
    for path in ["/reconcile", "/flush", "/flush?idle_only=true"] {
        let response = client
            .post(format!("{base}{path}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 401, "{path} without a token");
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth("wrong-token")
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(env.registrations().len(), 1, "the 401s changed nothing");

    let response = post_api(&client, &base, "/reconcile").await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["delta"], json!(0), "{result}");
    assert_eq!(result["created"], json!(0), "{result}");

    let response = post_api(&client, &base, "/flush").await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["removed"], json!(1), "{result}");
    assert_eq!(env.instances().await.len(), 0);
    assert_eq!(env.registrations().len(), 0);
    let samples = get_metrics(&client, &base).await;
    assert_eq!(
        counter(
            &samples,
            "runner_manager_reconciles_total",
            &[("result", "ok")]
        ),
        2.0
    );
    assert_eq!(triggers(&samples, "api") - triggers(&baseline, "api"), 1.0);

    // An idle daemon stops at once on SIGINT, with status 0, and does not flush or reconcile.
    let calls = env.list_calls();
    env.signal_daemon("INT");
    let (code, took) = env.wait_daemon_exit(Duration::from_secs(30)).await;
    env.clock.mark(&format!("idle daemon exited in {took:?}"));
    assert_eq!(code, Some(0), "{}", env.daemon_log());
    assert_eq!(env.list_calls(), calls, "no pass at shutdown");
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

/// SIGTERM while the startup pass creates three runners: the pass finishes within the grace
/// period, the process exits 0, and the next pass finds exactly three whole runners.
async fn sigterm_during_reconcile_leaves_no_half_created_runner(image: &str) {
    const QUANTITY: usize = 3;
    let quantity = u32::try_from(QUANTITY).expect("small");
    let (mut env, base, client) = hourly_daemon(image, quantity).await;

    // Wait until the startup pass is creating instances.
    let what = "the startup pass creating instances";
    env.eventually(what, WAIT, Duration::from_millis(20), || async {
        let in_flight = health(&client, &base)
            .await
            .is_some_and(|h| h["daemon"]["in_flight"] == json!(true));
        if in_flight && !env.instances().await.is_empty() {
            Ok(())
        } else {
            Err(format!("in flight: {in_flight}"))
        }
    })
    .await;
    let registered = env.registrations().len();
    env.clock.mark(&format!(
        "SIGTERM with the pass in flight ({registered} of {QUANTITY} registered)"
    ));
    env.signal_daemon("TERM");
    // The bound: the daemon's shutdown grace (120 s) plus the server drain (10 s).
    let (code, took) = env.wait_daemon_exit(Duration::from_secs(130)).await;
    env.clock.mark(&format!("daemon exited in {took:?}"));
    let log = env.daemon_log();
    assert_eq!(code, Some(0), "exit status; log:\n{log}");
    assert!(
        log.contains("waiting for the in-flight reconcile"),
        "the signal arrived during the pass; log:\n{log}"
    );
    assert!(
        !log.contains("Reconcile failed"),
        "the pass was not cut short; log:\n{log}"
    );

    env.reconcile_until_clean().await;
    let status = env.run(&["status", "--json"]).await.json("status");
    assert_eq!(
        status["runners"].as_array().map(Vec::len),
        Some(QUANTITY),
        "{status}"
    );
    assert_eq!(status["dangling"], json!([]), "{status}");
    assert_eq!(status["orphans"], json!([]), "{status}");
    for runner in status["runners"].as_array().expect("runners") {
        assert_eq!(runner["instance_status"], json!("running"), "{runner}");
        assert!(runner["github_status"].is_string(), "{runner}");
    }
    let instances = env.instances().await;
    assert_eq!(instances.len(), QUANTITY, "{instances:#?}");
    let registrations = env.registrations();
    assert_eq!(registrations.len(), QUANTITY, "{registrations:#?}");
    let mut instance_names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let mut registration_names: Vec<&str> = registrations.iter().map(|r| r.name.as_str()).collect();
    instance_names.sort_unstable();
    registration_names.sort_unstable();
    assert_eq!(
        instance_names, registration_names,
        "every instance is registered"
    );

    env.flush_all_and_finish(u64::try_from(QUANTITY).expect("small"))
        .await;
}

/// The simulator delivers its own signed webhooks for a job: `queued` asks for a pass, the
/// runner runs the job, and `completed` makes the daemon replace the finished ephemeral runner,
/// all without the timer (the interval is an hour).
async fn daemon_replaces_a_finished_runner_on_the_completed_webhook(image: &str) {
    let (mut env, base, client) = hourly_daemon(image, 1).await;
    let passes = daemon_fleet(&client, &base, 1, &env).await;
    let first = env.registrations().remove(0);
    let created_before = metric(
        &get_metrics(&client, &base).await,
        "runner_manager_runners_created_total",
        &[],
    );

    env.sim.set_webhook(Some(github_sim::WebhookTarget {
        url: format!("{base}/webhook"),
        secret: github_sim::Secret::new(WEBHOOK_SECRET),
    }));
    let job = env.enqueue(&["self-hosted", &env.app], "echo hello from $(hostname)");
    let done = env
        .sim
        .wait_for_job(job, WAIT)
        .await
        .expect("the job exists");
    env.clock.mark(&format!("job {job}: {:?}", done.status));
    assert_eq!(done.status, github_sim::JobStatus::Completed, "{done:#?}");
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{done:#?}");
    assert_eq!(done.runner_name.as_deref(), Some(first.name.as_str()));
    assert!(done.output.contains(&first.name), "{done:#?}");

    // The finished runner is replaced: one new online runner, the old instance gone.
    let what = "the finished runner replaced";
    let replacement = env
        .eventually(what, WAIT, Duration::from_millis(100), || async {
            let runners = env.registrations();
            let instances = env.instances().await;
            match (runners.as_slice(), instances.as_slice()) {
                ([runner], [instance])
                    if runner.name != first.name
                        && runner.status == "online"
                        && instance.name == runner.name =>
                {
                    Ok(runner.clone())
                }
                _ => Err(format!(
                    "{runners:#?} {:?}",
                    instances.iter().map(|i| &i.name).collect::<Vec<_>>()
                )),
            }
        })
        .await;
    env.clock
        .mark(&format!("{} replaced by {}", first.name, replacement.name));
    // The pass that created it has ended once the counter moved (metrics are recorded at the
    // end of a pass; `queued` and `completed` may share a pass, so passes are not counted).
    let created = "runner_manager_runners_created_total";
    env.eventually(
        "the replacement counted",
        WAIT,
        Duration::from_millis(100),
        || async {
            let now = metric(&get_metrics(&client, &base).await, created, &[]);
            if now < created_before + 1.0 {
                Err(format!("{created} {now}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    wait_passes(&client, &base, passes + 1, &env).await;

    let deliveries = env.sim.webhook_deliveries();
    let mut actions: Vec<(&str, Option<u16>)> = deliveries
        .iter()
        .filter(|d| d.job_id == job)
        .map(|d| (d.action.as_str(), d.status))
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            ("completed", Some(202)),
            ("in_progress", Some(200)),
            ("queued", Some(202))
        ],
        "{deliveries:#?}"
    );
    let samples = get_metrics(&client, &base).await;
    let outcome = |outcome: &str| job_deliveries(&samples, outcome);
    assert_eq!(outcome("reconcile_triggered"), 1.0);
    assert_eq!(outcome("cleanup_triggered"), 1.0);
    assert_eq!(outcome("ignored"), 1.0, "in_progress is ignored");
    assert_eq!(outcome("unauthorized"), 0.0);
    assert_eq!(triggers(&samples, "timer"), 0.0, "no timer pass");
    assert_eq!(
        metric(&samples, "runner_manager_runners_created_total", &[]) - created_before,
        1.0,
        "the replacement"
    );

    env.stop_daemon().await;
    env.flush_all_and_finish(1).await;
}

#[test]
fn the_openmetrics_parser_rejects_broken_expositions() {
    let good =
        "# HELP a A.\n# TYPE a counter\na_total{k=\"v\",w=\"x\"} 3\n# TYPE g gauge\ng 1.5\n# EOF\n";
    let samples = parse_openmetrics(good).expect("valid");
    assert_eq!(metric(&samples, "a_total", &[("k", "v")]), 3.0);
    assert_eq!(metric(&samples, "a_total", &[("k", "v"), ("w", "x")]), 3.0);
    assert_eq!(metric(&samples, "g", &[]), 1.5);
    assert_eq!(metric(&samples, "missing", &[]), 0.0);
    for bad in [
        "# TYPE g gauge\ng 1\n",
        "# TYPE g gauge\ng 1\n# EOF\n# EOF\n",
        "g 1\n# EOF\n",
        "# TYPE g gauge\ng one\n# EOF\n",
        "# TYPE g gauge\ng{k=v} 1\n# EOF\n",
        "# TYPE g widget\ng 1\n# EOF\n",
        "# TYPE g gauge\n# TYPE g gauge\ng 1\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}
