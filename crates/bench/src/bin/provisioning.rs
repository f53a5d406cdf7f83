//! Benchmark 1: provisioning against the floor, on REAL Incus. For N = 1, 5, 10: the time from
//! `reconcile(N)` until all N runners are online in github-sim, against the floor (N bare
//! parallel launches of the same image with the same profiles plus one exec each, with our own
//! `lxd` client) measured in the same run; then the per-phase profile of the manager's rounds.
//!
//! `cargo run --release -p bench --bin provisioning [-- --sizes 1,5,10 --reps 3 --concurrency K]`
//! (`--concurrency` overrides `ManagerConfig::create_concurrency`; default: the manager's default.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bench::real::{self, median, phase_order, retried, secs, Rig, Timeline};
use bench::table::{phase_table, ratio, Table};
use clap::Parser;
use manager::RunnerManager;

#[derive(Parser, Debug)]
struct Args {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    sizes: Vec<usize>,
    /// Repetitions per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// `create_concurrency` of the manager (default: `ManagerConfig`'s default).
    #[arg(long)]
    concurrency: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

struct Run {
    online: Duration,
    reconcile: Duration,
    profile: real::Profile,
}

struct Round {
    floor: Duration,
    default: Run,
    wide: Run,
}

/// One `reconcile(n)` from zero, timed until all `n` runners are online; cleaned up after.
async fn measure(
    rig: &Rig,
    manager: &RunnerManager,
    timeline: &Timeline,
    n: usize,
) -> anyhow::Result<Run> {
    timeline.clear();
    let t0 = Instant::now();
    let online = rig
        .reconcile_online(manager, n, t0, Duration::from_secs(150))
        .await;
    for error in timeline.errors() {
        eprintln!("provider error (the manager retried or failed): {error}");
    }
    let online = online?;
    let profile = real::profile(&timeline.calls(), &online.at, t0);
    rig.clean(manager).await?;
    Ok(Run {
        online: online.last(),
        reconcile: online.reconcile,
        profile,
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (rig, tag, _guard) = Rig::start_run("provisioning").await?;
    let (default, default_timeline) = rig.manager(&format!("{tag}m"), args.concurrency).await?;
    let widest = args.sizes.iter().copied().max().unwrap_or(1);
    let (wide, wide_timeline) = rig.manager(&format!("{tag}w"), Some(widest)).await?;
    eprintln!(
        "provisioning: create_concurrency {} and {widest}",
        args.concurrency
            .map_or_else(|| "default".to_owned(), |n| n.to_string())
    );

    let mut rounds: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    let mut failed_rounds = 0;
    for &n in &args.sizes {
        for rep in 0..args.reps {
            let floor_prefix = format!("{tag}f{n}x{rep}-");
            let floor = rig.measure_floor(&floor_prefix, n).await?;
            let default_run = retried(&mut failed_rounds, || {
                measure(&rig, &default, &default_timeline, n)
            })
            .await?;
            let wide_run = retried(&mut failed_rounds, || {
                measure(&rig, &wide, &wide_timeline, n)
            })
            .await?;
            eprintln!(
                "N={n} rep {rep}: floor {}, manager online {} (reconcile returned {}), with create_concurrency {widest}: {}",
                secs(floor),
                secs(default_run.online),
                secs(default_run.reconcile),
                secs(wide_run.online),
            );
            rounds.entry(n).or_default().push(Round {
                floor,
                default: default_run,
                wide: wide_run,
            });
        }
    }

    let default_label = format!(
        "manager (create_concurrency {})",
        args.concurrency.map_or_else(
            || format!(
                "{}, default",
                manager::reconcile::DEFAULT_CREATE_CONCURRENCY
            ),
            |n| n.to_string()
        )
    );
    let wide_label = format!("manager (create_concurrency {widest})");
    let mut table = Table::new(&[
        "N",
        "floor: bare launch + exec",
        &format!("{default_label}: reconcile(N) → all online"),
        "ratio",
        &format!("{wide_label}: → all online"),
        "ratio",
    ]);
    for (n, list) in &rounds {
        let pick = |f: fn(&Round) -> Duration| median(&list.iter().map(f).collect::<Vec<_>>());
        let floor = pick(|r| r.floor);
        let default_online = pick(|r| r.default.online);
        let wide_online = pick(|r| r.wide.online);
        table.row(vec![
            n.to_string(),
            secs(floor),
            secs(default_online),
            ratio(default_online.as_secs_f64(), floor.as_secs_f64()),
            secs(wide_online),
            ratio(wide_online.as_secs_f64(), floor.as_secs_f64()),
        ]);
    }
    println!(
        "\n### Provisioning against the floor (median of {} runs; target ≤ 1.30× at N = 10)\n",
        args.reps
    );
    print!("{}", table.render());
    println!("\nRounds repeated after a failed creation: {failed_rounds}");

    for (label, pick) in [
        (
            &default_label,
            (|r: &Round| &r.default.profile) as fn(&Round) -> &real::Profile,
        ),
        (&wide_label, |r: &Round| &r.wide.profile),
    ] {
        let columns: Vec<(String, Vec<&real::Profile>)> = rounds
            .iter()
            .map(|(n, list)| (format!("N={n}"), list.iter().map(pick).collect()))
            .collect();
        let phases = phase_table(&phase_order(), &columns);
        println!("\n### Where a runner's time goes: {label} (averaged over runs)\n");
        print!("{}", phases.render());
    }
    Ok(())
}
