//! Benchmark 4: job pickup latency on REAL Incus. With 0 idle runners a `queued` job is enqueued
//! in github-sim and the webhook-equivalent trigger calls `reconcile(1)` at once; measured from
//! the enqueue to the runner online and to the job picked up, against the floor for 1 runner
//! (one bare launch + exec with our own `lxd` client) measured in the same run.
//!
//! `cargo run --release -p bench --bin pickup-latency [-- --reps 3]`

use std::time::{Duration, Instant};

use anyhow::Context;
use bench::real::{median, secs, Rig};
use bench::table::Table;
use clap::Parser;
use github_sim::{JobSpec, JobStatus};

#[derive(Parser, Debug)]
struct Args {
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

struct Rep {
    floor: Duration,
    online: Duration,
    picked: Duration,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (rig, tag, _guard) = Rig::start_run("pickup-latency").await?;
    let app = format!("{tag}p");
    let (manager, _timeline) = rig.manager(&app, None).await?;
    let prefix = manager.owner().prefix();

    let mut reps = Vec::new();
    for rep in 0..args.reps {
        let floor_prefix = format!("{tag}f{rep}-");
        let floor = rig.measure_floor(&floor_prefix, 1).await?;

        let idle = rig
            .sim
            .runners()
            .iter()
            .filter(|r| r.name.starts_with(&prefix))
            .count();
        anyhow::ensure!(idle == 0, "{idle} runner(s) left from the previous round");
        let t0 = Instant::now();
        let job = rig
            .sim
            .enqueue_job(JobSpec::new(&["self-hosted", &app], "true"))?;
        // The webhook-equivalent trigger: reconcile(1) at once.
        let online = rig
            .reconcile_online(&manager, 1, t0, Duration::from_secs(120))
            .await?
            .last();
        let picked = loop {
            let view = rig.sim.job(job).context("the job vanished")?;
            if view.status != JobStatus::Queued {
                break t0.elapsed();
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "job {job} not picked up after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let done = rig.sim.wait_for_job(job, Duration::from_secs(60)).await;
        anyhow::ensure!(
            done.as_ref()
                .is_some_and(|j| j.status == JobStatus::Completed),
            "job {job} did not complete: {done:?}"
        );
        rig.clean(&manager).await?;
        // The runner's registration must be gone before the next "0 idle runners" round.
        let deadline = Instant::now() + Duration::from_secs(30);
        while rig
            .sim
            .runners()
            .iter()
            .any(|r| r.name.starts_with(&prefix))
        {
            anyhow::ensure!(Instant::now() < deadline, "registrations left after flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "rep {rep}: floor {}, enqueue → online {}, enqueue → picked up {}",
            secs(floor),
            secs(online),
            secs(picked)
        );
        reps.push(Rep {
            floor,
            online,
            picked,
        });
    }

    let pick = |f: fn(&Rep) -> Duration| median(&reps.iter().map(f).collect::<Vec<_>>());
    let floor = pick(|r| r.floor);
    let online = pick(|r| r.online);
    let picked = pick(|r| r.picked);
    let over = |d: Duration| d.as_secs_f64() - floor.as_secs_f64();
    let mut table = Table::new(&[
        "measure (median)",
        "time",
        "over the floor",
        "target ≤ floor + 1 s",
    ]);
    table.row(vec![
        "floor: 1 bare launch + exec".into(),
        secs(floor),
        "—".into(),
        "—".into(),
    ]);
    for (label, d) in [
        ("queued job → runner online", online),
        ("queued job → job picked up", picked),
    ] {
        table.row(vec![
            label.into(),
            secs(d),
            format!("+{:.2} s", over(d)),
            if over(d) <= 1.0 { "met" } else { "MISSED" }.into(),
        ]);
    }
    println!("\n### Job pickup latency (median of {} runs)\n", args.reps);
    print!("{}", table.render());
    Ok(())
}
