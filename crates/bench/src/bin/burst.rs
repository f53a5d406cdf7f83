//! Benchmark 5: the demand-driven burst on REAL Incus. The real `runner-manager run` daemon with
//! two pools (`small`: token registration, `large`: JIT; `min_idle = 0`, an hourly timer so only
//! webhooks drive it) against github-sim on the Incus bridge, which sends signed `workflow_job`
//! webhooks. 30 jobs of mixed labels are queued at once with no runner up; measured from just
//! before the first enqueue (the first `queued` webhook follows) to the last job picked up and
//! to the last job completed, against the floor measured in the same run: 30 bare parallel
//! launches (create+start and one exec each) of the same image with the same profiles, with our
//! own `lxd` client. Also: queue-time p50/p95 (exact, from polling the sim; from the sim's
//! whole-second timestamps; and bucket-interpolated from the daemon's
//! `runner_manager_job_queue_seconds`), the GitHub requests of the burst by endpoint with their
//! rate-limit cost, and the daemon's passes (from its log).
//!
//! `cargo build --release -p runner-manager && cargo run --release -p bench --bin burst -- [--runs N] [--image busybox]`
//!
//! The daemon binary is `target/release/runner-manager` (next to this one) or `RUNNER_MANAGER_BIN`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bench::burst::{self, Histogram, PoolSizes, World};
use bench::outside::RestCost;
use bench::real::{self, median, secs, Guard, REPO};
use bench::table::{ratio, Table};
use clap::Parser;
use github_sim::{JobSpec, JobStatus, RequestCount, SimHandle};

const JOBS: usize = 30;
const TARGET: f64 = 1.3;
const QUEUE_HISTOGRAM: &str = "runner_manager_job_queue_seconds";
const INSTALL_HISTOGRAM: &str = "runner_manager_runner_install_duration_seconds";

#[derive(Parser, Debug)]
struct Args {
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Image alias of the runners and of the floor's instances.
    #[arg(long, default_value = real::IMAGE)]
    image: String,
    /// `max` of each pool. The default, 20, leaves room above each pool's share of the 30 jobs,
    /// as caps are sized in practice; 15 is the tight case (2 × 15 = 30: every slot is used, and
    /// a job whose runner another job took waits for a spent runner's deletion).
    #[arg(long, default_value_t = 20)]
    max: u32,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

/// What one run measured.
struct RunResult {
    tag: String,
    floor: Duration,
    last_pickup: Duration,
    last_completion: Duration,
    /// Enqueue → the daemon logged the first webhook.
    first_webhook: Option<f64>,
    /// Per job: enqueue → picked up (polled every 20 ms).
    queue_exact: Vec<f64>,
    /// Per job: the sim's `started_at - created_at` (whole seconds).
    queue_sim: Vec<f64>,
    /// All pools' queue histogram, and per pool.
    queue_hist: Option<Histogram>,
    queue_hist_pools: BTreeMap<String, Histogram>,
    install_hist: Option<Histogram>,
    /// Requests from the first enqueue to the last pickup, and to the fleet back at 0.
    at_pickup: BTreeMap<String, RequestCount>,
    settled: BTreeMap<String, RequestCount>,
    back_to_zero: Option<Duration>,
    timeline: burst::LogTimeline,
    created: f64,
    peak_online: usize,
    jobs_per_pool: BTreeMap<String, usize>,
}

/// The pool a job's labels route to under this config (small first by priority, then large;
/// a `self-hosted`-only job fits both).
fn label_kind(labels: &[String]) -> &'static str {
    if labels.iter().any(|l| l.eq_ignore_ascii_case("large")) {
        "large"
    } else if labels.iter().any(|l| l.eq_ignore_ascii_case("small")) {
        "small"
    } else {
        "self-hosted only"
    }
}

/// One run: the floor, then the burst with a fresh daemon.
async fn one_run(
    sim: &Arc<SimHandle>,
    lxd: &lxd::Client,
    profiles: &[String],
    bin: &Path,
    args: &Args,
) -> anyhow::Result<RunResult> {
    let tag = real::run_tag();
    // Deletes every `<tag>*` instance when the run ends, however it ends; declared before the
    // daemon, so the daemon is killed first.
    let _guard = Guard::new(tag.clone());

    let floor = burst::floor(
        lxd,
        &args.image,
        profiles,
        &tag,
        JOBS,
        Duration::from_secs(60),
        // Let Incus settle after the deletes before the burst.
        Duration::from_secs(3),
    )
    .await?;

    let app = format!("{tag}d");
    let log_path = std::env::temp_dir().join(format!("burst-{tag}-daemon.log"));
    let sizes = PoolSizes {
        small_max: args.max,
        large_max: args.max,
    };
    let mut world = World::start(sim, bin, &args.image, &app, &log_path, |port, dir| {
        burst::pools_config(sizes, port, dir, 3600)
    })
    .await?;
    sim.set_webhook(Some(world.webhook_target()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    world
        .wait_started(&client, Duration::from_secs(180))
        .await?;
    anyhow::ensure!(
        burst::instances_of(lxd, &world.prefix).await? == 0,
        "an idle runner exists before the burst"
    );

    // The burst.
    let labels: [&[&str]; 3] = [
        &["self-hosted", "small"],
        &["self-hosted", "large"],
        &["self-hosted"],
    ];
    sim.reset_request_counts();
    let t0 = Instant::now();
    let t0_wall = burst::time_of_day(SystemTime::now());
    let mut jobs = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let spec = JobSpec {
            scope: Some(REPO.to_owned()),
            ..JobSpec::new(labels[i % labels.len()], "echo ok")
        };
        jobs.push((sim.enqueue_job(spec)?, t0.elapsed()));
    }
    let mut picked: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut completed: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut at_pickup = None;
    let mut peak_online = 0;
    let bound = Duration::from_secs(600);
    while completed.len() < JOBS {
        let now = t0.elapsed();
        for (id, _) in &jobs {
            let Some(view) = sim.job(*id) else {
                continue;
            };
            if view.status != JobStatus::Queued {
                picked.entry(*id).or_insert(now);
            }
            if view.status == JobStatus::Completed {
                completed.entry(*id).or_insert(now);
            }
        }
        if picked.len() == JOBS && at_pickup.is_none() {
            at_pickup = Some(sim.request_counts());
        }
        peak_online = peak_online.max(world.registered(sim, true));
        world.ensure_alive()?;
        anyhow::ensure!(
            now < bound,
            "{} of {JOBS} picked up, {} completed after {bound:?}; daemon log: {}",
            picked.len(),
            completed.len(),
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_pickup = picked.values().copied().max().unwrap_or_default();
    let last_completion = completed.values().copied().max().unwrap_or_default();

    // The fleet back to 0 (completed-job webhooks make passes that remove the spent runners).
    let settle_start = Instant::now();
    let mut back_to_zero = None;
    while settle_start.elapsed() < Duration::from_secs(180) {
        if world.is_empty(sim, lxd).await? {
            back_to_zero = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = sim.request_counts();

    let mut queue_exact = Vec::new();
    let mut queue_sim = Vec::new();
    let mut jobs_per_pool: BTreeMap<String, usize> = BTreeMap::new();
    for (id, enqueued) in &jobs {
        if let Some(at) = picked.get(id) {
            queue_exact.push(at.saturating_sub(*enqueued).as_secs_f64());
        }
        let view = sim.job(*id).context("a job vanished")?;
        anyhow::ensure!(
            view.conclusion.as_deref() == Some("success"),
            "job {id} did not succeed: {view:?}"
        );
        if let (Some(c), Some(s)) = (
            burst::line_time_of_day(&view.created_at),
            view.started_at.as_deref().and_then(burst::line_time_of_day),
        ) {
            queue_sim.push(s - c);
        }
        *jobs_per_pool
            .entry(label_kind(&view.labels).to_owned())
            .or_default() += 1;
    }

    let text = client
        .get(format!("{}/metrics", world.base))
        .send()
        .await?
        .text()
        .await?;
    let samples = burst::parse_metrics(&text);
    let mut queue_hist_pools = BTreeMap::new();
    for pool in burst::label_values(&samples, &format!("{QUEUE_HISTOGRAM}_count"), "pool") {
        if let Some(h) = Histogram::read(&samples, QUEUE_HISTOGRAM, &[("pool", &pool)]) {
            queue_hist_pools.insert(pool, h);
        }
    }
    let queue_hist = queue_hist_pools
        .values()
        .cloned()
        .reduce(|a, b| a.merge(&b));
    let install_hist = Histogram::read(&samples, INSTALL_HISTOGRAM, &[]);
    let created = burst::metric_sum(&samples, "runner_manager_runners_created_total", &[]);

    world.daemon.stop(Duration::from_secs(60));
    sim.set_webhook(None);
    let timeline = burst::passes(&std::fs::read_to_string(&log_path)?, t0_wall);
    let first_webhook = timeline.webhooks.first().copied();
    eprintln!(
        "[{tag}] burst: last pickup {}, last completion {}, back to 0 {}, first webhook at +{:.3} s, {} runners created, peak online {peak_online}; daemon log {}",
        secs(last_pickup),
        secs(last_completion),
        back_to_zero.map_or_else(|| "never (180 s)".to_owned(), secs),
        first_webhook.unwrap_or(f64::NAN),
        created,
        log_path.display()
    );
    for pass in timeline.passes.iter().filter(|p| p.finished >= 0.0) {
        eprintln!(
            "[{tag}]   pass finished +{:.2} s: created {}, removed {}, failed {} ({})",
            pass.finished, pass.created, pass.removed, pass.failed, pass.reasons
        );
    }
    for warning in &timeline.warnings {
        eprintln!("[{tag}]   {warning}");
    }
    Ok(RunResult {
        tag,
        floor,
        last_pickup,
        last_completion,
        first_webhook,
        queue_exact,
        queue_sim,
        queue_hist,
        queue_hist_pools,
        install_hist,
        at_pickup: at_pickup.unwrap_or_default(),
        settled,
        back_to_zero,
        timeline,
        created,
        peak_online,
        jobs_per_pool,
    })
}

fn medf(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().collect();
    burst::percentile(&v, 0.5)
}

fn pair(p50: f64, p95: f64) -> String {
    format!("{p50:.2} s / {p95:.2} s")
}

fn hist_pair(h: Option<&Histogram>) -> String {
    match h.and_then(|h| Some((h.quantile(0.5)?, h.quantile(0.95)?))) {
        Some((a, b)) => pair(a, b),
        None => "—".into(),
    }
}

/// Requests counted against GitHub's primary limit vs the runner protocol's.
fn runner_protocol(counts: &BTreeMap<String, RequestCount>) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| k.contains(" /_runner/") || k.contains("/releases/download/"))
        .map(|(_, c)| c.count)
        .sum()
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let bin = burst::locate_binary()?;
    let agent = github_sim::tarball::locate_or_build_agent().context("the fake runner")?;
    const RUNNER_VERSION: &str = "2.331.0";
    let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
    let sim = Arc::new(
        burst::bridge_sim(
            github_sim::SimConfig::default().with_runner_tarball(tarball, RUNNER_VERSION),
        )
        .await?,
    );
    let lxd = lxd::Client::discover()
        .await
        .context("connecting to Incus")?;
    // The daemon's instances and the floor get the same profiles.
    let profiles = burst::daemon_profiles(&lxd).await?;
    eprintln!(
        "burst: daemon {}, sim at {}, image {}, {} run(s)",
        bin.display(),
        sim.base_url(),
        args.image,
        args.runs
    );

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let result = one_run(&sim, &lxd, &profiles, &bin, &args)
            .await
            .with_context(|| format!("run {}", i + 1))?;
        runs.push(result);
    }

    // Per run.
    let mut per_run = Table::new(&[
        "run",
        "floor: 30 bare launches + exec",
        "burst → last pickup",
        "ratio",
        "burst → last completion",
        "passes",
        "runners created",
        "REST requests (cost)",
    ]);
    for (i, r) in runs.iter().enumerate() {
        let cost = RestCost::from_counts(&r.settled);
        let passes = r
            .timeline
            .passes
            .iter()
            .filter(|p| p.finished >= 0.0)
            .count();
        per_run.row(vec![
            format!("{} ({})", i + 1, r.tag),
            secs(r.floor),
            secs(r.last_pickup),
            ratio(r.last_pickup.as_secs_f64(), r.floor.as_secs_f64()),
            secs(r.last_completion),
            passes.to_string(),
            format!("{}", r.created),
            format!("{} ({})", cost.requests, cost.rate_limit_cost),
        ]);
    }

    let floor = median(&runs.iter().map(|r| r.floor).collect::<Vec<_>>());
    let pickup = median(&runs.iter().map(|r| r.last_pickup).collect::<Vec<_>>());
    let completion = median(&runs.iter().map(|r| r.last_completion).collect::<Vec<_>>());
    let burst_ratio = medf(
        runs.iter()
            .map(|r| r.last_pickup.as_secs_f64() / r.floor.as_secs_f64()),
    );
    let exact50 = medf(runs.iter().map(|r| burst::percentile(&r.queue_exact, 0.5)));
    let exact95 = medf(runs.iter().map(|r| burst::percentile(&r.queue_exact, 0.95)));
    let sim50 = medf(runs.iter().map(|r| burst::percentile(&r.queue_sim, 0.5)));
    let sim95 = medf(runs.iter().map(|r| burst::percentile(&r.queue_sim, 0.95)));
    let hist_q = |q: f64| {
        medf(
            runs.iter()
                .filter_map(|r| r.queue_hist.as_ref().and_then(|h| h.quantile(q))),
        )
    };
    let install_mean = medf(runs.iter().filter_map(|r| {
        r.install_hist
            .as_ref()
            .filter(|h| h.count > 0.0)
            .map(|h| h.sum / h.count)
    }));
    let install_log95 = medf(
        runs.iter()
            .map(|r| burst::percentile(&r.timeline.installs, 0.95)),
    );
    let costs: Vec<RestCost> = runs
        .iter()
        .map(|r| RestCost::from_counts(&r.settled))
        .collect();
    let pickup_costs: Vec<RestCost> = runs
        .iter()
        .map(|r| RestCost::from_counts(&r.at_pickup))
        .collect();
    let medu =
        |f: &dyn Fn(&RestCost) -> u64, list: &[RestCost]| medf(list.iter().map(|c| f(c) as f64));

    let n = args.runs;
    let mut table = Table::new(&["measure", &format!("median of {n} run(s)"), "target"]);
    table.row(vec![
        format!("floor: {JOBS} bare parallel launches + exec"),
        secs(floor),
        "—".into(),
    ]);
    table.row(vec![
        "burst: first enqueue → last job picked up".into(),
        secs(pickup),
        "—".into(),
    ]);
    table.row(vec![
        "ratio burst / floor (median of per-run ratios)".into(),
        format!("{burst_ratio:.2}×"),
        format!(
            "≤ {TARGET:.2}×: {}",
            if burst_ratio <= TARGET {
                "met"
            } else {
                "MISSED"
            }
        ),
    ]);
    table.row(vec![
        "burst: first enqueue → last job completed".into(),
        secs(completion),
        "—".into(),
    ]);
    table.row(vec![
        "queue time p50 / p95, exact (enqueue → picked up, polled every 20 ms)".into(),
        pair(exact50, exact95),
        "—".into(),
    ]);
    table.row(vec![
        "queue time p50 / p95, sim timestamps (whole seconds)".into(),
        pair(sim50, sim95),
        "—".into(),
    ]);
    table.row(vec![
        "queue time p50 / p95, daemon histogram (bucket-interpolated)".into(),
        pair(hist_q(0.5), hist_q(0.95)),
        "—".into(),
    ]);
    table.row(vec![
        "runner install, mean (histogram) / p95 (log)".into(),
        pair(install_mean, install_log95),
        "—".into(),
    ]);
    table.row(vec![
        "GitHub REST requests per burst (to fleet back at 0)".into(),
        format!("{:.0}", medu(&|c| c.requests, &costs)),
        "—".into(),
    ]);
    table.row(vec![
        "  of which rate-limit cost (primary 5,000/h)".into(),
        format!("{:.0}", medu(&|c| c.rate_limit_cost, &costs)),
        "—".into(),
    ]);
    table.row(vec![
        "  of which content-creating POSTs (secondary 80/min)".into(),
        format!("{:.0}", medu(&|c| c.content_creating, &costs)),
        "—".into(),
    ]);
    table.row(vec![
        "GitHub REST requests up to the last pickup (cost)".into(),
        format!(
            "{:.0} ({:.0})",
            medu(&|c| c.requests, &pickup_costs),
            medu(&|c| c.rate_limit_cost, &pickup_costs)
        ),
        "—".into(),
    ]);
    table.row(vec![
        "runner-protocol requests (not rate-limited)".into(),
        format!(
            "{:.0}",
            medf(runs.iter().map(|r| runner_protocol(&r.settled) as f64))
        ),
        "—".into(),
    ]);

    println!(
        "\n### Demand-driven burst: {JOBS} jobs, two pools (max {} each), median of {n} run(s)\n",
        args.max
    );
    print!("{}", table.render());
    println!("\n### Per run\n");
    print!("{}", per_run.render());

    // The last run in detail.
    if let Some(last) = runs.last() {
        println!("\n### Queue time per pool, run {} (seconds)\n", last.tag);
        let mut pools = Table::new(&[
            "pool",
            "jobs (histogram count)",
            "p50 / p95 (bucket-interpolated)",
            "mean",
        ]);
        for (pool, h) in &last.queue_hist_pools {
            pools.row(vec![
                pool.clone(),
                format!("{}", h.count),
                hist_pair(Some(h)),
                format!("{:.2} s", h.sum / h.count.max(1.0)),
            ]);
        }
        print!("{}", pools.render());
        println!(
            "\nJobs by label: {:?}; peak online registrations {}; first webhook logged {:.3} s after the first enqueue; fleet back at 0 after {}.",
            last.jobs_per_pool,
            last.peak_online,
            last.first_webhook.unwrap_or(f64::NAN),
            last.back_to_zero
                .map_or_else(|| "never (180 s)".to_owned(), secs)
        );
        println!(
            "\n### GitHub requests by endpoint, run {} (enqueue → fleet back at 0)\n",
            last.tag
        );
        let mut endpoints = Table::new(&["endpoint", "requests", "rate-limit cost", "304"]);
        for (key, c) in &last.settled {
            endpoints.row(vec![
                format!("`{key}`"),
                c.count.to_string(),
                c.rate_limit_cost.to_string(),
                c.not_modified.to_string(),
            ]);
        }
        print!("{}", endpoints.render());
        println!(
            "\n### Daemon passes, run {} (time the pass finished, since the first enqueue)\n",
            last.tag
        );
        let mut passes = Table::new(&["finished", "created", "removed", "failed", "reasons"]);
        for p in last.timeline.passes.iter().filter(|p| p.finished >= 0.0) {
            passes.row(vec![
                format!("+{:.2} s", p.finished),
                p.created.to_string(),
                p.removed.to_string(),
                p.failed.to_string(),
                p.reasons.clone(),
            ]);
        }
        print!("{}", passes.render());
        println!(
            "\nWebhooks logged: {}; JIT pacing lines: {}; 'wait for a pool below max' lines: {}; warnings: {}",
            last.timeline.webhooks.len(),
            last.timeline.pacing,
            last.timeline.waiting,
            last.timeline.warnings.len()
        );
    }
    Ok(())
}
