//! End to end, demand-driven pools: the `runner-manager run` daemon with `[[pools]]`, the GitHub
//! simulator sending real `workflow_job` webhooks, real Incus containers and the fake runner.
//!
//! - `pools_route_jobs_drain_and_count_unmatched` (both images): each job runs on a runner of a
//!   pool whose labels it has; `min_idle` is kept; a job no pool matches creates nothing and is
//!   counted; a pool removed from the config drains; `status`, `reconcile --pool` and
//!   `flush --pool` work on pools.
//! - `burst_of_30_jobs_over_two_pools` (busybox): 30 jobs of mixed labels queued in one burst
//!   with no runner up: every job runs on a runner of a matching pool, no pool ever has more
//!   runners than its `max`, and the pools are back to `min_idle` within one interval.
//! - `daemon_killed_mid_burst_recovers_missed_deliveries` (busybox): the daemon is killed with
//!   SIGKILL during a burst, more jobs are queued while it is down (their deliveries fail), and
//!   a new daemon recovers them from GitHub's delivery log: every job completes successfully
//!   (no busy runner killed), and no instance or registration is left beyond `min_idle`.
//!
//! Each test has its own simulator, state dir and app name; a guard deletes the app's
//! instances and kills the daemon even when a test fails.

mod e2e_env;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_env::*;
use github_sim::{JobStatus, WebhookTarget};
use serde_json::Value;

test_support::on_both_images!(worker_threads = 2; pools_route_jobs_drain_and_count_unmatched);

test_support::on_busybox_only!(
    worker_threads = 2;
    burst_of_30_jobs_over_two_pools,
    daemon_killed_mid_burst_recovers_missed_deliveries,
);

/// Two pools: `small` (token registration) and `large` (JIT, 2 CPUs), with their sizes.
fn two_pools(small: (u32, u32), large: (u32, u32)) -> String {
    format!(
        r#"
[[pools]]
name = "small"
labels = ["small"]
registration = "token"
min_idle = {}
max = {}
priority = 1

[[pools]]
name = "large"
labels = ["large"]
cpu = 2
memory = "512MiB"
registration = "jit"
min_idle = {}
max = {}
"#,
        small.0, small.1, large.0, large.1
    )
}

/// Watches Incus every 100 ms: the most instances each pool had at once, and the pool of every
/// instance seen (by its `user.runner-manager.pool` key).
struct Watch {
    seen: Arc<Mutex<BTreeMap<String, String>>>,
    peak: Arc<Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(env: &Env) -> Self {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let peak = Arc::new(Mutex::new(BTreeMap::new()));
        let (lxd, prefix) = (env.lxd.clone(), env.prefix());
        let (seen2, peak2) = (Arc::clone(&seen), Arc::clone(&peak));
        let task = tokio::spawn(async move {
            loop {
                if let Ok(all) = lxd.list_instances().await {
                    let mut now: BTreeMap<String, usize> = BTreeMap::new();
                    for instance in all.iter().filter(|i| i.name.starts_with(&prefix)) {
                        let pool = pool_of_instance(instance);
                        *now.entry(pool.clone()).or_default() += 1;
                        seen2
                            .lock()
                            .expect("lock")
                            .insert(instance.name.clone(), pool);
                    }
                    let mut peak = peak2.lock().expect("lock");
                    for (pool, n) in now {
                        let p: &mut usize = peak.entry(pool).or_default();
                        *p = (*p).max(n);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { seen, peak, task }
    }

    fn pool_of(&self, runner: &str) -> Option<String> {
        self.seen.lock().expect("lock").get(runner).cloned()
    }

    fn peak(&self) -> BTreeMap<String, usize> {
        self.peak.lock().expect("lock").clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pool of an instance, by its `user.runner-manager.pool` key (none: `default`).
fn pool_of_instance(instance: &lxd::Instance) -> String {
    instance
        .config
        .get("user.runner-manager.pool")
        .cloned()
        .unwrap_or_else(|| "default".to_owned())
}

/// Instances per pool.
fn count_per_pool(instances: &[lxd::Instance]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for instance in instances {
        *out.entry(pool_of_instance(instance)).or_default() += 1;
    }
    out
}

/// Instances of the app per pool, now.
async fn per_pool(env: &Env) -> BTreeMap<String, usize> {
    count_per_pool(&env.instances().await)
}

/// Waits until the app's instances per pool are exactly `want` and each has an online, idle
/// registration.
async fn wait_pools(env: &Env, want: &[(&str, usize)], bound: Duration) {
    let want: BTreeMap<String, usize> = want
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| ((*p).to_owned(), *n))
        .collect();
    let what = format!("pools at {want:?}");
    let total = want.values().sum();
    let logs = || env.daemon_log();
    env.wait_idle_fleet(&what, total, bound, &logs, |instances| {
        count_per_pool(instances) == want
    })
    .await;
}

/// Waits for every job to complete; returns them.
async fn wait_jobs(env: &Env, jobs: &[u64], bound: Duration) -> Vec<github_sim::JobView> {
    let what = format!("{} job(s) completed", jobs.len());
    env.eventually(&what, bound, Duration::from_millis(200), || async {
        let views: Vec<_> = jobs.iter().filter_map(|id| env.sim.job(*id)).collect();
        let running: Vec<_> = views
            .iter()
            .filter(|j| j.status != JobStatus::Completed)
            .collect();
        if views.len() == jobs.len() && running.is_empty() {
            Ok(views)
        } else {
            Err(format!("not completed: {running:#?}"))
        }
    })
    .await
}

/// Each job succeeded on a runner of a pool that has all its labels.
fn assert_ran_on_matching_pools(watch: &Watch, jobs: &[github_sim::JobView]) {
    for job in jobs {
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:#?}");
        let runner = job.runner_name.as_deref().expect("a runner ran it");
        let pool = watch
            .pool_of(runner)
            .unwrap_or_else(|| panic!("{runner} was never seen as an instance"));
        let labels: BTreeSet<String> = job.labels.iter().map(|l| l.to_ascii_lowercase()).collect();
        let pool_label = match pool.as_str() {
            "small" => "small",
            "large" => "large",
            other => panic!("job {} ran on pool {other}", job.job_id),
        };
        let other = if pool_label == "small" {
            "large"
        } else {
            "small"
        };
        assert!(
            !labels.contains(other),
            "job {} ({:?}) ran on {runner} of pool {pool}",
            job.job_id,
            job.labels
        );
    }
}

fn pool_metric(samples: &[Sample], name: &str, pool: &str, state: Option<&str>) -> f64 {
    let mut labels = vec![("pool", pool)];
    if let Some(state) = state {
        labels.push(("state", state));
    }
    metric(samples, name, &labels)
}

/// Writes a config with `pools` and a `[server]` on a free port (timer every
/// `interval_seconds`; `public_url` names the webhook, so missed deliveries are recovered),
/// points the simulator's webhook at the daemon, caches the runner binary, starts the daemon
/// and waits for its first pass. Returns the daemon's base URL, its `[server]` and a client.
async fn start_pools_daemon(
    env: &mut Env,
    pools: &str,
    interval_seconds: u64,
) -> (String, ServerSection, reqwest::Client) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = ServerSection {
        port,
        interval_seconds,
    };
    env.write_pools_config(pools, &server, &public_url(&base));
    env.sim.set_webhook(Some(WebhookTarget {
        url: format!("{base}/webhook"),
        secret: github_sim::Secret::new(WEBHOOK_SECRET),
    }));
    env.update_runner_bin().await;
    env.start_daemon();
    let client = http();
    wait_passes(&client, &base, 1, env).await;
    (base, server, client)
}

/// The `[server]` key naming the URL GitHub delivers to (the hook is found by it).
fn public_url(base: &str) -> String {
    format!("public_url = \"{base}/webhook\"\n")
}

async fn pools_route_jobs_drain_and_count_unmatched(image: &str) {
    let mut env = Env::new(image).await;
    let (base, server, client) =
        start_pools_daemon(&mut env, &two_pools((1, 2), (0, 1)), 3600).await;
    wait_pools(&env, &[("small", 1)], WAIT).await;
    let watch = Watch::start(&env);

    // A job for `large`: its pool grows from 0 to 1 and back, and it runs there.
    let large = env.enqueue(&["self-hosted", "LARGE"], "echo large on $(hostname)");
    // A job no pool matches: nothing is created for it, it is counted.
    let gpu = env.enqueue(&["self-hosted", "gpu"], "echo never");
    let done = wait_jobs(&env, &[large], WAIT).await;
    assert_ran_on_matching_pools(&watch, &done);
    assert_eq!(
        watch.pool_of(done[0].runner_name.as_deref().expect("runner")),
        Some("large".to_owned())
    );
    wait_pools(&env, &[("small", 1)], WAIT).await;
    let samples = get_metrics(&client, &base).await;
    assert_eq!(
        metric(&samples, "runner_manager_jobs_unmatched_total", &[]),
        1.0
    );
    assert_eq!(
        pool_metric(
            &samples,
            "runner_manager_pool_runners",
            "small",
            Some("desired")
        ),
        1.0
    );
    assert!(
        metric(
            &samples,
            "runner_manager_job_queue_seconds_count",
            &[("pool", "large")]
        ) >= 1.0,
        "the queue time of the large job is observed"
    );
    assert_eq!(
        env.sim.job(gpu).expect("job").status,
        JobStatus::Queued,
        "no runner for the gpu job"
    );
    assert!(
        watch.peak().get("large").copied().unwrap_or(0) <= 1,
        "{:?}",
        watch.peak()
    );

    // status groups by pool.
    let status = env.run(&["status", "--json"]).await.json("status");
    let pools: Vec<(String, u64, u64)> = status["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["idle"].as_u64().expect("idle"),
                p["max"].as_u64().expect("max"),
            )
        })
        .collect();
    assert_eq!(
        pools,
        [("small".into(), 1, 2), ("large".into(), 0, 1)],
        "{status}"
    );

    // `small` leaves the config: a new daemon drains it, `large` stays at min_idle 0.
    env.stop_daemon().await;
    let large_only = two_pools((0, 0), (1, 1));
    let large_only = &large_only[large_only
        .find("[[pools]]\nname = \"large\"")
        .expect("large")..];
    env.write_pools_config(large_only, &server, &public_url(&base));
    // `reconcile --pool large` acts on `large` alone: `small` is untouched by it.
    let out = env.run(&["reconcile", "--pool", "large", "--json"]).await;
    let doc: Value = out.json("reconcile --pool");
    assert_eq!(doc["pools"][0]["name"], "large", "{doc}");
    assert_eq!(
        per_pool(&env).await.get("small"),
        Some(&1),
        "small untouched"
    );
    // A pass over every pool drains `small` (no longer configured): its idle runner goes.
    let doc: Value = env.run(&["reconcile", "--json"]).await.json("reconcile");
    let small = doc["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == "small")
        .unwrap_or_else(|| panic!("small is planned: {doc}"))
        .clone();
    assert_eq!(small["draining"], true, "{doc}");
    assert_eq!(small["removed"], 1, "{doc}");
    wait_pools(&env, &[("large", 1)], WAIT).await;
    // `flush --pool large` removes that pool's runner.
    let out = env.run(&["flush", "--pool", "large", "--json"]).await;
    assert_eq!(out.json("flush --pool")["removed"], 1);
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

async fn burst_of_30_jobs_over_two_pools(image: &str) {
    let mut env = Env::new(image).await;
    let interval = 30;
    let (small_max, large_max) = (6, 4);
    let pools = two_pools((0, small_max), (0, large_max));
    let (base, _, client) = start_pools_daemon(&mut env, &pools, interval).await;
    assert!(
        env.instances().await.is_empty(),
        "no idle runner before the burst"
    );
    let watch = Watch::start(&env);

    let labels: [&[&str]; 3] = [
        &["self-hosted", "small"],
        &["self-hosted", "large"],
        &["self-hosted", "linux"],
    ];
    let jobs: Vec<u64> = (0..30)
        .map(|i| env.enqueue(labels[i % 3], "echo job on $(hostname); sleep 1"))
        .collect();
    env.clock.mark("30 jobs queued");
    let done = wait_jobs(&env, &jobs, Duration::from_secs(600)).await;
    assert_ran_on_matching_pools(&watch, &done);
    let peak = watch.peak();
    env.clock
        .mark(&format!("peak instances per pool: {peak:?}"));
    assert!(
        peak.get("small").copied().unwrap_or(0) <= small_max as usize,
        "{peak:?}"
    );
    assert!(
        peak.get("large").copied().unwrap_or(0) <= large_max as usize,
        "{peak:?}"
    );
    assert!(!peak.contains_key("default"), "{peak:?}");

    // Back to min_idle (0) within one interval of the last job.
    wait_pools(&env, &[], Duration::from_secs(interval)).await;
    let samples = get_metrics(&client, &base).await;
    let queued: f64 = ["small", "large"]
        .iter()
        .map(|p| {
            metric(
                &samples,
                "runner_manager_job_queue_seconds_count",
                &[("pool", p)],
            )
        })
        .sum();
    assert_eq!(queued, 30.0, "every job's queue time observed once");
    assert_eq!(
        metric(&samples, "runner_manager_jobs_unmatched_total", &[]),
        0.0
    );
    env.clock.mark("done");
}

async fn daemon_killed_mid_burst_recovers_missed_deliveries(image: &str) {
    let mut env = Env::new(image).await;
    // The hook is found by the URL GitHub delivers to (`public_url`).
    start_pools_daemon(&mut env, &two_pools((1, 4), (0, 3)), 3600).await;
    wait_pools(&env, &[("small", 1)], WAIT).await;

    let labels: [&[&str]; 2] = [&["self-hosted", "small"], &["self-hosted", "large"]];
    let mut jobs: Vec<u64> = (0..10)
        .map(|i| env.enqueue(labels[i % 2], "echo job on $(hostname); sleep 3"))
        .collect();
    // Mid-burst: some jobs done, others running or queued.
    env.eventually("2 jobs done", WAIT, Duration::from_millis(100), || async {
        match env.completed(&jobs) {
            done if done >= 2 => Ok(()),
            done => Err(format!("{done} done")),
        }
    })
    .await;
    env.signal_daemon("KILL");
    let _ = env.wait_daemon_exit(Duration::from_secs(10)).await;
    env.clock.mark("daemon killed");
    // Queued while the daemon is down: their deliveries fail.
    jobs.extend((0..6).map(|i| env.enqueue(labels[i % 2], "echo late on $(hostname)")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed = env
        .sim
        .webhook_deliveries()
        .iter()
        .filter(|d| d.status.is_none_or(|s| !(200..300).contains(&s)))
        .count();
    assert!(
        failed >= 6,
        "deliveries to the dead daemon failed: {failed}"
    );

    env.start_daemon();
    let done = wait_jobs(&env, &jobs, Duration::from_secs(420)).await;
    for job in &done {
        assert_eq!(
            job.conclusion.as_deref(),
            Some("success"),
            "no job killed: {job:#?}"
        );
    }
    let log = env.daemon_log();
    assert!(log.contains("Missed delivery recovered."), "{log}");
    // Nothing leaked: back to min_idle, every registration with its instance.
    wait_pools(&env, &[("small", 1)], WAIT).await;
    env.flush_all_and_finish(1).await;
}
