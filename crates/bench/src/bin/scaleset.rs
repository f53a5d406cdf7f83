//! The scale-set benchmark on REAL Incus: 0 → N runners (N = 100 by default) through the real
//! `runner-manager run` daemon in scale-set mode, against the REST-JIT path (a webhook-driven
//! JIT pool, paced under GitHub's 80 content-creating requests a minute) and against the floor
//! of N bare parallel launches (create+start and one exec each, same image and profiles), all
//! measured in the same run; then the idle cost of scale-set mode: GitHub requests per hour at
//! steady state with no job (REST, its conditional lists, the scale-set admin API, the queue).
//!
//! Each mode: N jobs (`sleep <job_seconds>`) queued at once with no runner up; measured from
//! the first enqueue to the N-th job picked up (every job needs its own ephemeral runner, so
//! that is N runners made). The simulator runs on the Incus bridge with GitHub's 50 s long poll.
//!
//! `cargo build --release -p runner-manager && cargo run --release -p bench --bin scaleset -- [--runners 100] [--idle-seconds 300]`
//!
//! The daemon binary is `target/release/runner-manager` (next to this one) or
//! `RUNNER_MANAGER_BIN`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::burst::{self, World};
use bench::real::{self, secs, Guard, REPO};
use bench::scaleset::{rest_jit_pool, scaleset_pool, RequestSplit};
use bench::table::{ratio, Table};
use clap::Parser;
use github_sim::{JobSpec, JobStatus, SimHandle};

const TARGET: f64 = 1.3;

#[derive(Parser, Debug)]
struct Args {
    /// Runners to bring up from 0 (and the pools' `max`).
    #[arg(long, default_value_t = 100)]
    runners: u32,
    /// How long each job runs (keeps its runner busy while the rest come up).
    #[arg(long, default_value_t = 30)]
    job_seconds: u32,
    /// The idle window of the idle-cost measure.
    #[arg(long, default_value_t = 300)]
    idle_seconds: u64,
    /// The daemon's backstop interval (`server.reconcile_interval_seconds`).
    #[arg(long, default_value_t = 60)]
    backstop_seconds: u64,
    /// Image alias of the runners and of the floor's instances.
    #[arg(long, default_value = real::IMAGE)]
    image: String,
    /// Skip the REST-JIT comparison.
    #[arg(long)]
    no_rest: bool,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

/// The daemon log of `app`.
fn log_of(app: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("scaleset-{app}-daemon.log"))
}

/// Waits for the daemon's `/health` to say its startup pass is done.
async fn wait_started(world: &mut World) -> anyhow::Result<()> {
    world
        .wait_started(&reqwest::Client::new(), Duration::from_secs(120))
        .await
}

/// Queues `n` jobs with `labels` and waits until all are picked up; the time to the last pickup,
/// the peak of online runners and the requests of the burst.
async fn burst(
    sim: &SimHandle,
    world: &mut World,
    labels: &[&str],
    n: usize,
    job_seconds: u32,
) -> anyhow::Result<(Duration, usize, RequestSplit)> {
    sim.reset_request_counts();
    let t0 = Instant::now();
    let mut jobs = Vec::with_capacity(n);
    for _ in 0..n {
        let spec = JobSpec {
            scope: Some(REPO.to_owned()),
            ..JobSpec::new(labels, format!("sleep {job_seconds}"))
        };
        jobs.push(sim.enqueue_job(spec)?);
    }
    let mut picked = 0;
    let mut peak = 0;
    let bound = Duration::from_secs(900);
    while picked < n {
        picked = jobs
            .iter()
            .filter(|id| sim.job(**id).is_some_and(|j| j.status != JobStatus::Queued))
            .count();
        peak = peak.max(world.registered(sim, true));
        world.ensure_alive()?;
        anyhow::ensure!(
            t0.elapsed() < bound,
            "{picked} of {n} picked up after {bound:?}; log {}",
            world.daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t0.elapsed();
    let split = RequestSplit::from_counts(&sim.request_counts());
    // Let the jobs finish and the runners go.
    let deadline = Instant::now() + Duration::from_secs(u64::from(job_seconds) + 300);
    while jobs.iter().any(|id| {
        sim.job(*id)
            .is_some_and(|j| j.status != JobStatus::Completed)
    }) {
        anyhow::ensure!(Instant::now() < deadline, "the jobs never finished");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((took, peak, split))
}

/// Waits until no instance or registration of the world is left.
async fn wait_empty(sim: &SimHandle, lxd: &lxd::Client, world: &World) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if world.is_empty(sim, lxd).await? {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "{} registrations left; log {}",
            world.registered(sim, false),
            world.daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = usize::try_from(args.runners)?;
    let bin = burst::locate_binary()?;
    let agent = github_sim::tarball::locate_or_build_agent().context("the fake runner")?;
    const RUNNER_VERSION: &str = "2.331.0";
    let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
    // GitHub's long poll (50 s); an assignment timeout long enough for a burst on a 2-core host.
    let scaleset = github_sim::ScaleSetConfig {
        assign_timeout: Duration::from_secs(900),
        ..github_sim::ScaleSetConfig::default()
    };
    let sim = Arc::new(
        burst::bridge_sim(
            github_sim::SimConfig::default()
                .with_runner_tarball(tarball, RUNNER_VERSION)
                .with_scaleset(scaleset),
        )
        .await?,
    );
    let lxd = lxd::Client::discover()
        .await
        .context("connecting to Incus")?;
    let profiles = burst::daemon_profiles(&lxd).await?;
    let tag = real::run_tag();
    let _guard = Guard::new(tag.clone());
    eprintln!(
        "scaleset: daemon {}, sim at {}, image {}, {n} runners",
        bin.display(),
        sim.base_url(),
        args.image
    );

    // 1. The floor.
    let floor = burst::floor(
        &lxd,
        &args.image,
        &profiles,
        &tag,
        n,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await?;

    // 2. Scale-set mode.
    let app = format!("{tag}s");
    let backstop = args.backstop_seconds;
    let mut world = World::start(&sim, &bin, &args.image, &app, &log_of(&app), |port, dir| {
        scaleset_pool(args.runners, port, dir, backstop)
    })
    .await?;
    wait_started(&mut world).await?;
    let set_label = format!("{app}-ss");
    let (ss_time, ss_peak, ss_requests) =
        burst(&sim, &mut world, &[set_label.as_str()], n, args.job_seconds).await?;
    eprintln!("[{tag}] scale set: {n} jobs picked up in {}", secs(ss_time));
    let ss_drain = wait_empty(&sim, &lxd, &world).await?;

    // 3. Idle cost of scale-set mode: nothing queued, nothing running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim.reset_request_counts();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_window = idle_start.elapsed().as_secs_f64();
    let idle = RequestSplit::from_counts(&sim.request_counts());
    world.daemon.stop(Duration::from_secs(30));
    real::delete_prefix(&lxd, &world.prefix).await?;

    // 4. The REST-JIT path: a webhook-driven JIT pool.
    let rest = if args.no_rest {
        None
    } else {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let app = format!("{tag}r");
        let mut world = World::start(&sim, &bin, &args.image, &app, &log_of(&app), |port, dir| {
            rest_jit_pool(args.runners, port, dir, 3600)
        })
        .await?;
        sim.set_webhook(Some(world.webhook_target()));
        wait_started(&mut world).await?;
        let result = burst(
            &sim,
            &mut world,
            &["self-hosted", "restjit"],
            n,
            args.job_seconds,
        )
        .await?;
        eprintln!("[{tag}] REST JIT: {n} jobs picked up in {}", secs(result.0));
        sim.set_webhook(None);
        world.daemon.stop(Duration::from_secs(30));
        real::delete_prefix(&lxd, &world.prefix).await?;
        Some(result)
    };

    // Report.
    let mut table = Table::new(&[
        "path",
        "0 → N picked up",
        "× floor",
        "peak online",
        "REST",
        "REST 304",
        "REST content-creating",
        "admin",
        "queue",
    ]);
    table.row(vec![
        format!("floor ({n} bare launches)"),
        secs(floor),
        "1.00".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    let mut row = |name: &str, (took, peak, r): &(Duration, usize, RequestSplit)| {
        table.row(vec![
            name.to_owned(),
            secs(*took),
            ratio(took.as_secs_f64(), floor.as_secs_f64()),
            peak.to_string(),
            r.rest.to_string(),
            r.rest_not_modified.to_string(),
            r.rest_content_creating.to_string(),
            r.admin.to_string(),
            r.queue.to_string(),
        ]);
    };
    row("scale set", &(ss_time, ss_peak, ss_requests));
    if let Some(rest) = &rest {
        row("REST JIT (webhooks)", rest);
    }
    println!("\n0 → {n} runners (each job `sleep {}`)", args.job_seconds);
    println!("{}", table.render());
    let ss_ratio = ss_time.as_secs_f64() / floor.as_secs_f64();
    println!(
        "scale set / floor = {ss_ratio:.2} (target ≤ {TARGET}): {}",
        if ss_ratio <= TARGET { "met" } else { "NOT met" }
    );
    if let Some((rest_time, _, _)) = &rest {
        println!(
            "REST JIT / floor = {:.2}; scale set / REST JIT = {:.2}",
            rest_time.as_secs_f64() / floor.as_secs_f64(),
            ss_time.as_secs_f64() / rest_time.as_secs_f64()
        );
    }
    println!(
        "scale set: fleet back to 0 runners {} after the last job completed",
        secs(ss_drain)
    );
    let [rest_h, not_modified_h, creating_h, admin_h, queue_h] = idle.per_hour(idle_window);
    println!(
        "\nidle cost, scale-set mode ({idle_window:.0} s at steady state, 0 jobs, backstop every {backstop} s, 50 s long poll), per hour:"
    );
    let mut idle_table = Table::new(&[
        "REST (non-304)",
        "REST 304 (free)",
        "REST content-creating",
        "scale-set admin",
        "queue polls/acks",
    ]);
    idle_table.row(vec![
        format!("{rest_h:.0}"),
        format!("{not_modified_h:.0}"),
        format!("{creating_h:.0}"),
        format!("{admin_h:.0}"),
        format!("{queue_h:.0}"),
    ]);
    println!("{}", idle_table.render());
    Ok(())
}
