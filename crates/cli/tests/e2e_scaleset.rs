//! End to end, scale-set mode: the `runner-manager run` daemon with a `[[pools]]` pool of
//! `scaling = "scaleset"`, the GitHub simulator's runner scale-set protocol (1 s long polls),
//! real Incus containers and the fake runner.
//!
//! - `fifty_jobs_from_zero` (busybox): 50 jobs queued at once on a set at 0 runners: every job
//!   runs exactly once, the pool never has more instances than `max`, every runner is gone after
//!   its job, and the pool is back to `min_idle`.
//! - `listener_killed_fifty_times_while_jobs_flow` (busybox): the daemon is SIGKILLed at random
//!   moments ≥ 50 times and restarted while jobs keep coming: every job runs exactly once and
//!   succeeds (no busy job killed), and nothing is left at the end.
//! - `standby_takes_over_when_the_active_manager_dies` (busybox): two managers (units 0 and 1)
//!   on one scale set: one holds the session, the other stands by (409); the active one is
//!   killed; the standby takes over within one session expiry plus one long poll, and the
//!   event logs show the two were never active at once and the standby created nothing before.
//! - `broker_faults_and_lost_sessions_are_survived` (busybox): 200s with an empty body, a burst
//!   of 500s on the queue, an expired session, expired queue tokens and the scale set deleted
//!   on the service: the daemon lives on (a new session, a new set) and every job runs once.
//! - `statistics_reading_zero_still_get_runners` (busybox): the sim's "statistics read 0 while
//!   jobs are assigned" fault: the jobs still get runners (from the `JobAssigned` messages).
//!
//! Each test has its own simulator, state dir and app name; a guard deletes the app's
//! instances and kills the daemons even when a test fails.

mod e2e_env;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_env::*;
use rand::Rng;
use serde_json::{json, Value};

#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_here(&[
        "incus_tests_are_ignored_by_default",
    ]);
}

test_support::on_busybox_only!(
    worker_threads = 2;
    fifty_jobs_from_zero,
    listener_killed_fifty_times_while_jobs_flow,
    standby_takes_over_when_the_active_manager_dies,
    broker_faults_and_lost_sessions_are_survived,
    statistics_reading_zero_still_get_runners,
);

/// The sim's session expiry in these tests: a killed listener's session frees itself this long
/// after its last poll.
const SESSION_TIMEOUT_MS: u64 = 3000;
/// The sim's long-poll hold.
const POLL_WAIT_MS: u64 = 1000;

/// One scale-set pool, `pool`, with `min_idle` and `max`.
fn scaleset_pool(min_idle: u32, max: u32) -> String {
    format!(
        r#"
[[pools]]
name = "ss"
labels = ["ss"]
registration = "jit"
scaling = "scaleset"
min_idle = {min_idle}
max = {max}

[scaleset]
standby_backoff_min_ms = 200
standby_backoff_max_ms = 1000
error_backoff_min_ms = 200
error_backoff_max_ms = 2000
poll_timeout_seconds = 10
"#
    )
}

/// The scale set's name: `<app>-ss`.
fn set_name(env: &Env) -> String {
    format!("{}-ss", env.app)
}

/// Test timings of the sim's scale sets: 1 s polls, a short session expiry, and an assignment
/// timeout long enough for a container to boot.
async fn configure_sim(env: &Env) {
    let response = http()
        .post(format!("{}/_sim/scalesets/config", env.sim.base_url()))
        .json(&json!({
            "poll_wait_ms": POLL_WAIT_MS,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "assign_timeout_ms": 300_000,
            "lock_timeout_ms": 5_000,
        }))
        .send()
        .await
        .expect("sim config");
    assert!(response.status().is_success(), "{response:?}");
}

async fn sim_get(env: &Env, path: &str) -> Value {
    get_json(&http(), &format!("{}{path}", env.sim.base_url())).await
}

async fn sim_post(env: &Env, path: &str, body: Value) {
    let response = http()
        .post(format!("{}{path}", env.sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("sim hook");
    assert!(response.status().is_success(), "{path}: {response:?}");
}

/// The sim's view of the app's scale set.
async fn scale_set(env: &Env) -> Option<Value> {
    let dump = sim_get(env, "/_sim/scalesets").await;
    let name = set_name(env);
    dump["scale_sets"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == json!(name))
        .cloned()
}

/// Queues a job for the scale set (its `runs-on` is the set's name).
fn enqueue(env: &Env, script: &str) -> u64 {
    env.enqueue(&[set_name(env).as_str()], script)
}

/// Queues `n` jobs for the scale set, the `i`th echoing `<what> <i>`.
fn enqueue_n(env: &Env, n: usize, what: &str) -> Vec<u64> {
    (0..n)
        .map(|i| enqueue(env, &format!("echo {what} {i}")))
        .collect()
}

/// Writes the config (`pools`, a `[server]` on a free port with `interval` seconds between
/// backstop passes), caches the runner binary and starts the daemon.
async fn start(env: &mut Env, pools: &str, interval: u64) -> String {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = ServerSection {
        port,
        interval_seconds: interval,
    };
    env.write_pools_config(pools, &server, "");
    enable_events_log(&env.config, &env.dir.path().join("events.log"));
    env.update_runner_bin().await;
    env.start_daemon();
    base
}

/// A world whose daemon keeps one scale-set pool of `min_idle` and `max` ([`start`], backstop
/// passes hourly), the sim on test timings: the world and the daemon's base URL.
async fn scaleset_daemon(image: &str, min_idle: u32, max: u32) -> (Env, String) {
    let mut env = Env::new(image).await;
    configure_sim(&env).await;
    let base = start(&mut env, &scaleset_pool(min_idle, max), 3600).await;
    (env, base)
}

/// Appends `[metrics]` with the events log to a config.
fn enable_events_log(config: &Path, log: &Path) {
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str(&format!(
        "\n[metrics]\nissue_metrics = true\nevents_log = \"{}\"\n",
        log.display()
    ));
    std::fs::write(config, text).expect("config");
}

/// Watches Incus every 100 ms: the most instances of the app at once.
struct Peak {
    peak: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Peak {
    fn start(env: &Env) -> Self {
        let peak = Arc::new(Mutex::new(0));
        let (lxd, prefix, peak2) = (env.lxd.clone(), env.prefix(), Arc::clone(&peak));
        let task = tokio::spawn(async move {
            loop {
                if let Ok(all) = lxd.list_instances().await {
                    let n = all.iter().filter(|i| i.name.starts_with(&prefix)).count();
                    let mut p = peak2.lock().expect("lock");
                    *p = (*p).max(n);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { peak, task }
    }

    fn get(&self) -> usize {
        *self.peak.lock().expect("lock")
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until every job of `jobs` is completed in the sim; returns the set's job records.
async fn wait_done(
    env: &Env,
    jobs: &[u64],
    bound: Duration,
    logs: &dyn Fn() -> String,
) -> Vec<Value> {
    let every = Duration::from_millis(250);
    let what = format!("{} job(s) completed", jobs.len());
    let records = eventually(&what, bound, every, logs, || async {
        let set = scale_set(env).await;
        let records: Vec<Value> = set
            .as_ref()
            .and_then(|s| s["jobs"].as_array().cloned())
            .unwrap_or_default();
        match env.completed(jobs) {
            done if done == jobs.len() => Ok(records),
            done => Err(format!("{done} completed; scale set: {set:#?}")),
        }
    })
    .await;
    env.clock.mark(&what);
    records
}

/// Every job ran exactly once on one of the app's runners, and succeeded.
fn assert_exactly_once(env: &Env, jobs: &[u64], records: &[Value]) {
    let prefix = env.prefix();
    for id in jobs {
        let job = env.sim.job(*id).expect("job");
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:#?}");
        assert!(
            job.runner_name
                .as_deref()
                .is_some_and(|r| r.starts_with(&prefix)),
            "{job:#?}"
        );
        let record = records
            .iter()
            .find(|r| r["job_id"] == json!(id))
            .unwrap_or_else(|| panic!("job {id} was never the scale set's"));
        assert_eq!(record["runs"], json!(1), "job {id} ran {}", record["runs"]);
    }
}

/// Waits until the app has exactly `n` instances, each with an idle online registration.
async fn wait_idle(env: &Env, n: usize, bound: Duration, logs: &dyn Fn() -> String) {
    let what = format!("{n} idle runner(s)");
    env.wait_idle_fleet(&what, n, bound, logs, |instances| instances.len() == n)
        .await;
}

/// Each of `jobs` ran on a runner named `<prefix>...`.
fn assert_ran_on(env: &Env, jobs: &[u64], prefix: &str) {
    for id in jobs {
        let runner = env
            .sim
            .job(*id)
            .and_then(|j| j.runner_name)
            .expect("runner");
        assert!(runner.starts_with(prefix), "job {id} ran on {runner}");
    }
}

async fn fifty_jobs_from_zero(image: &str) {
    let (min_idle, max) = (1, 12);
    let (mut env, base) = scaleset_daemon(image, min_idle, max).await;
    let client = http();
    wait_idle(&env, 1, WAIT, &|| env.daemon_log()).await;
    let set = scale_set(&env).await.expect("the scale set exists");
    assert!(set["session_id"].is_string(), "{set:#?}");

    let peak = Peak::start(&env);
    let started = Instant::now();
    let jobs = enqueue_n(&env, 50, "job");
    let records = wait_done(&env, &jobs, Duration::from_secs(300), &|| env.daemon_log()).await;
    env.clock.mark(&format!(
        "50 jobs done in {:.1}s, peak {} instances",
        started.elapsed().as_secs_f64(),
        peak.get()
    ));
    assert_exactly_once(&env, &jobs, &records);
    assert!(
        peak.get() <= max as usize,
        "peak {} > max {max}",
        peak.get()
    );
    // Every runner went after its job: back to min_idle.
    wait_idle(&env, min_idle as usize, WAIT, &|| env.daemon_log()).await;
    let ran_on: BTreeSet<String> = jobs
        .iter()
        .filter_map(|id| env.sim.job(*id).and_then(|j| j.runner_name))
        .collect();
    assert_eq!(ran_on.len(), 50, "each runner ran one job");
    let now: BTreeSet<String> = env.instances().await.into_iter().map(|i| i.name).collect();
    assert!(
        ran_on.is_disjoint(&now),
        "a runner outlived its job: {now:?}"
    );

    // The metrics: session active, desired back to min_idle, queue times observed.
    let samples = get_metrics(&client, &base).await;
    let pool = [("pool", "ss")];
    assert_eq!(
        metric(
            &samples,
            "runner_manager_scaleset_session",
            &[("pool", "ss"), ("state", "active")]
        ),
        1.0
    );
    assert_eq!(
        metric(&samples, "runner_manager_scaleset_desired_runners", &pool),
        f64::from(min_idle)
    );
    assert!(
        metric(
            &samples,
            "runner_manager_scaleset_job_startup_seconds_count",
            &pool
        ) >= 50.0
    );
    assert!(
        metric(
            &samples,
            "runner_manager_scaleset_jobs_completed_total",
            &[("pool", "ss"), ("result", "succeeded")]
        ) >= 50.0
    );

    // A clean shutdown deletes the session.
    env.signal_daemon("TERM");
    env.wait_daemon_exit(Duration::from_secs(60)).await;
    let set = scale_set(&env).await.expect("the scale set exists");
    assert!(set["session_id"].is_null(), "session left: {set:#?}");
}

async fn listener_killed_fifty_times_while_jobs_flow(image: &str) {
    let (mut env, _) = scaleset_daemon(image, 0, 6).await;
    let kills: usize = std::env::var("SCALESET_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut jobs = Vec::new();
    let mut rng = rand::rng();
    let log_path = env.daemon_log_path();
    let all_logs = |path: &Path| -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(path.parent().expect("dir"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("daemon") {
                text.push_str(&format!("==== {name}\n"));
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    };
    for round in 0..kills {
        // One or two jobs per round: they flow through the kills.
        for _ in 0..rng.random_range(1..=2) {
            jobs.push(enqueue(&env, "sleep 1; echo done"));
        }
        let up = Duration::from_millis(rng.random_range(300..4000));
        tokio::time::sleep(up).await;
        env.signal_daemon("KILL");
        env.wait_daemon_exit(Duration::from_secs(10)).await;
        // Keep each run's log.
        let _ = std::fs::rename(
            &log_path,
            log_path.with_file_name(format!("daemon-{round:03}.log")),
        );
        env.start_daemon();
    }
    env.clock
        .mark(&format!("{kills} kills done, {} jobs queued", jobs.len()));
    let records = wait_done(&env, &jobs, Duration::from_secs(900), &|| {
        all_logs(&log_path)
    })
    .await;
    assert_exactly_once(&env, &jobs, &records);
    // Nothing left: min_idle is 0.
    let what = "no instance or registration left";
    let logs = || all_logs(&log_path);
    eventually(what, WAIT, Duration::from_millis(500), &logs, || async {
        let (instances, registrations) = (env.instances().await, env.registrations());
        if instances.is_empty() && registrations.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "left: {:?} {registrations:#?}",
                instances.iter().map(|i| &i.name).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    env.clock.mark(what);
}

/// A second manager (unit 1, its own state dir and events log) on the same pool.
struct Second {
    config: PathBuf,
    events: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Second {
    fn start(&mut self) {
        self.child = Some(spawn_daemon(&self.config, &["run"], &self.log));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events-log lines of `event`.
fn events(path: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == json!(event))
        .collect()
}

/// `(from, to)` in ms of each interval during which the log says the session was active.
fn active_intervals(path: &Path, end_ms: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut since = None;
    for e in events(path, "scaleset_session") {
        let at = e["at_ms"].as_i64().expect("at_ms");
        match (e["state"].as_str(), since) {
            (Some("active"), None) => since = Some(at),
            (Some("active"), Some(_)) => {}
            (_, Some(from)) => {
                out.push((from, at));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(from) = since {
        out.push((from, end_ms));
    }
    out
}

async fn standby_takes_over_when_the_active_manager_dies(image: &str) {
    // min_idle 0: once its jobs are done the first manager has no runner left, so the jobs
    // after the kill can only run on runners the second one makes. (A runner the killed
    // manager was removing may stay frozen until that unit comes back.)
    let (mut env, _) = scaleset_daemon(image, 0, 4).await;
    wait_session(&env).await;
    let first_events = env.dir.path().join("events.log");

    // The second manager: unit 1, its own state.
    let text = std::fs::read_to_string(&env.config).expect("config");
    let second_dir = env.dir.path().join("second");
    std::fs::create_dir_all(&second_dir).expect("dir");
    let port = free_port();
    let text = text
        .replace("unit = 0", "unit = 1")
        .replace(
            &format!("state_dir = \"{}\"", env.dir.path().join("state").display()),
            &format!("state_dir = \"{}\"", second_dir.join("state").display()),
        )
        .replace(
            &first_events.display().to_string(),
            &second_dir.join("events.log").display().to_string(),
        );
    let text = regex_replace_listen(&text, port);
    let mut second = Second {
        config: second_dir.join("config.toml"),
        events: second_dir.join("events.log"),
        log: second_dir.join("daemon.log"),
        child: None,
    };
    std::fs::write(&second.config, text).expect("config");
    second.start();
    // It stands by: 409s, no session of its own, no runner.
    let what = "the second manager stands by";
    let second_log = || second.log();
    eventually(
        what,
        WAIT,
        Duration::from_millis(200),
        &second_log,
        || async {
            let sessions = events(&second.events, "scaleset_session");
            if sessions.iter().any(|e| e["state"] == json!("standby")) {
                Ok(())
            } else {
                Err(format!("sessions {sessions:?}"))
            }
        },
    )
    .await;
    // Jobs while the first is active: only unit 0 runs them.
    let before = enqueue_n(&env, 3, "before");
    wait_done(&env, &before, WAIT, &|| env.daemon_log()).await;
    assert_ran_on(&env, &before, &format!("{}-0-", env.app));

    wait_idle(&env, 0, WAIT, &|| env.daemon_log()).await;
    // Kill the active one: the standby takes over within the session expiry plus a long poll
    // and its backoff.
    env.signal_daemon("KILL");
    let killed_at = now_ms();
    env.wait_daemon_exit(Duration::from_secs(10)).await;
    let bound = Duration::from_millis(SESSION_TIMEOUT_MS + POLL_WAIT_MS + 1000 + 2000);
    let what = "the standby takes over";
    let every = Duration::from_millis(100);
    let within = bound + Duration::from_secs(10);
    let took_over = eventually(what, within, every, &second_log, || async {
        events(&second.events, "scaleset_session")
            .into_iter()
            .find(|e| e["state"] == json!("active"))
            .map(|e| e["at_ms"].as_i64().expect("at_ms"))
            .ok_or_else(|| "no active session".to_owned())
    })
    .await;
    let takeover = Duration::from_millis(u64::try_from(took_over - killed_at).unwrap_or(0));
    env.clock
        .mark(&format!("standby took over {takeover:?} after the kill"));
    assert!(
        takeover <= bound,
        "takeover took {takeover:?} (session expiry {SESSION_TIMEOUT_MS} ms, poll {POLL_WAIT_MS} ms)"
    );
    let after = enqueue_n(&env, 3, "after");
    let records = wait_done(&env, &after, WAIT, &second_log).await;
    assert_ran_on(&env, &after, &format!("{}-1-", env.app));
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert_exactly_once(&env, &all, &records);

    // Never both active; the second created no runner before it was active.
    let end = now_ms();
    let first = active_intervals(&first_events, killed_at);
    let second_active = active_intervals(&second.events, end);
    for (a0, a1) in &first {
        for (b0, b1) in &second_active {
            assert!(
                a1 <= b0 || b1 <= a0,
                "both active: {first:?} {second_active:?}"
            );
        }
    }
    let installed = events(&second.events, "runner_installed");
    assert!(!installed.is_empty(), "the second manager created runners");
    for e in installed {
        let at = e["timestamp"].as_i64().expect("timestamp") * 1000;
        // `timestamp` is in seconds: the creation ended within the active interval's second.
        assert!(
            second_active.iter().any(|(b0, _)| at + 1000 >= *b0),
            "the standby created a runner before it was active: {e}"
        );
    }
    // The first manager's instances are its own to clean (it is dead): not the second's.
}

/// Replaces the `listen = "127.0.0.1:PORT"` line's port.
fn regex_replace_listen(text: &str, port: u16) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Waits until the app's scale set has a session.
async fn wait_session(env: &Env) {
    env.eventually("a session", WAIT, Duration::from_millis(200), || async {
        match scale_set(env).await {
            Some(set) if set["session_id"].is_string() => Ok(()),
            set => Err(format!("no session: {set:?}")),
        }
    })
    .await;
}

async fn statistics_reading_zero_still_get_runners(image: &str) {
    let mut env = Env::new(image).await;
    configure_sim(&env).await;
    sim_post(
        &env,
        "/_sim/scalesets/faults",
        json!({"statistics_zero": true}),
    )
    .await;
    let base = start(&mut env, &scaleset_pool(0, 4), 3600).await;
    let client = http();
    // The listener is up (a session) with no runner.
    wait_session(&env).await;
    let jobs: Vec<u64> = (0..4)
        .map(|i| enqueue(&env, &format!("sleep 2; echo {i}")))
        .collect();
    // While they are assigned, the statistics say 0.
    let messages = "runner_manager_scaleset_messages_total";
    let what = "a message received";
    let samples = env
        .eventually(what, WAIT, Duration::from_millis(200), || async {
            let samples = get_metrics(&client, &base).await;
            match metric(&samples, messages, &[("pool", "ss")]) {
                n if n >= 1.0 => Ok(samples),
                n => Err(format!("{messages} {n}")),
            }
        })
        .await;
    assert_eq!(
        metric(
            &samples,
            "runner_manager_scaleset_statistics",
            &[("pool", "ss"), ("stat", "assigned_jobs")]
        ),
        0.0,
        "the fault makes the statistics read 0"
    );
    let records = wait_done(&env, &jobs, WAIT, &|| env.daemon_log()).await;
    assert_exactly_once(&env, &jobs, &records);
    wait_idle(&env, 0, WAIT, &|| env.daemon_log()).await;
}

/// The current session id of the app's set.
async fn session_id(env: &Env) -> Option<String> {
    scale_set(env).await?["session_id"]
        .as_str()
        .map(str::to_owned)
}

/// Queues `n` jobs and waits until they ran, each exactly once.
async fn jobs_run(env: &Env, n: usize, what: &str) -> Vec<u64> {
    let jobs = enqueue_n(env, n, what);
    let records = wait_done(env, &jobs, WAIT, &|| env.daemon_log()).await;
    assert_exactly_once(env, &jobs, &records);
    env.clock.mark(&format!("{what}: {n} job(s) ran once"));
    jobs
}

async fn broker_faults_and_lost_sessions_are_survived(image: &str) {
    let (mut env, _) = scaleset_daemon(image, 0, 3).await;
    wait_session(&env).await;
    let mut all = Vec::new();

    // 200s with an empty body (the broker's EOF).
    sim_post(&env, "/_sim/scalesets/faults", json!({"empty_body": 3})).await;
    all.extend(jobs_run(&env, 2, "empty bodies").await);

    // A burst of 500s on the queue poll: more than the client's own retries.
    let poll = env
        .sim
        .request_counts()
        .into_keys()
        .find(|k| k.starts_with("GET ") && k.contains("/messages"))
        .expect("the queue was polled");
    env.sim.inject_fault(github_sim::FaultSpec {
        count: Some(7),
        ..github_sim::FaultSpec::status(poll.clone(), 500)
    });
    all.extend(jobs_run(&env, 2, "queue 500s").await);

    // The session expires on the service: a new one.
    let before = session_id(&env).await.expect("a session");
    sim_post(
        &env,
        &format!("/_sim/scalesets/sessions/{before}/expire"),
        json!({}),
    )
    .await;
    all.extend(jobs_run(&env, 2, "expired session").await);
    let after = session_id(&env).await.expect("a new session");
    assert_ne!(before, after, "a new session was created");

    // The queue tokens expire: refreshed.
    sim_post(
        &env,
        "/_sim/scalesets/tokens/expire",
        json!({"queue": true}),
    )
    .await;
    all.extend(jobs_run(&env, 2, "expired queue token").await);

    // The set is deleted on the service: created again.
    wait_idle(&env, 0, WAIT, &|| env.daemon_log()).await;
    let old_id = scale_set(&env).await.expect("the set")["id"]
        .as_u64()
        .expect("id");
    let client = github::scaleset::ScaleSetClient::new(github::scaleset::ScaleSetConfig::new(
        url::Url::parse(&format!("{}/{REPO}", env.sim.web_url())).expect("url"),
        github::Auth::Token(github::Secret::new(env.sim.token().expose())),
    ))
    .expect("client");
    client.delete_scale_set(old_id).await.expect("set deleted");
    all.extend(jobs_run(&env, 2, "set deleted").await);
    let new_id = scale_set(&env).await.expect("a new set")["id"]
        .as_u64()
        .expect("id");
    assert_ne!(old_id, new_id, "the set was created again");

    assert!(
        env.daemon
            .as_mut()
            .expect("daemon")
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the daemon died:\n{}",
        env.daemon_log()
    );
    assert_eq!(all.len(), 10);
    wait_idle(&env, 0, WAIT, &|| env.daemon_log()).await;
}
