//! Benchmark 1: provisioning against the floor, on REAL Incus. For N = 1, 5, 10: the time from
//! `reconcile(N)` until all N runners are online in github-sim, against the floor (N bare
//! parallel launches of the same image with the same profiles plus one exec each, with our own
//! `lxd` client) measured in the same run; then the per-phase profile of the manager's rounds.
//!
//! `cargo run --release -p bench --bin provisioning [-- --sizes 1,5,10 --reps 3 --concurrency K]`
//! (`--concurrency` overrides `ManagerConfig::create_concurrency`; default: the manager's default.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::real::{self, median, phase_order, secs, Guard, Rig};
use bench::table::{ratio, Table};
use clap::Parser;

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
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

struct Round {
    floor: Duration,
    online: Duration,
    reconcile: Duration,
    profile: real::Profile,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let tag = real::run_tag();
    // Declared after the rig: dropped first, while nothing else is running.
    let _guard = Guard::new(tag.clone());
    let app = format!("{tag}m");
    let (manager, timeline) = rig.manager(&app, args.concurrency).await?;
    let prefix = manager.owner().prefix();
    eprintln!(
        "provisioning: sim at {}, instances named {tag}*, create_concurrency {}",
        rig.sim.base_url(),
        args.concurrency
            .map_or_else(|| "default".to_owned(), |n| n.to_string())
    );

    let mut rounds: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    for &n in &args.sizes {
        for rep in 0..args.reps {
            let floor_prefix = format!("{tag}f{n}x{rep}-");
            let floor = rig.floor(&floor_prefix, n).await?;
            let deleting = Instant::now();
            rig.delete_prefix(&floor_prefix).await?;
            eprintln!("floor cleanup: {}", secs(deleting.elapsed()));

            timeline.clear();
            let t0 = Instant::now();
            let watcher = rig.watch_online(&prefix, n, t0, Duration::from_secs(150));
            let report = tokio::time::timeout(
                Duration::from_secs(150),
                manager.reconcile(n, &rig.resources),
            )
            .await
            .context("reconcile timed out")??;
            let reconcile = t0.elapsed();
            anyhow::ensure!(
                report.failed.is_empty() && report.created.len() == n,
                "reconcile({n}) did not create {n} runners: {report:?}"
            );
            for error in timeline.errors() {
                eprintln!("provider error (the manager retried or failed): {error}");
            }
            let online_at = watcher.await??;
            let online = online_at.values().copied().max().unwrap_or_default();
            let profile = real::profile(&timeline.calls(), &online_at, t0);
            rig.clean(&manager).await?;
            eprintln!(
                "N={n} rep {rep}: floor {}, manager online {}, reconcile returned {}",
                secs(floor),
                secs(online),
                secs(reconcile)
            );
            rounds.entry(n).or_default().push(Round {
                floor,
                online,
                reconcile,
                profile,
            });
        }
    }

    let mut table = Table::new(&[
        "N",
        "floor (bare launch + exec)",
        "reconcile(N) → all online",
        "ratio",
        "target",
        "reconcile() returned",
    ]);
    for (n, list) in &rounds {
        let pick = |f: fn(&Round) -> Duration| median(&list.iter().map(f).collect::<Vec<_>>());
        let (floor, online) = (pick(|r| r.floor), pick(|r| r.online));
        table.row(vec![
            n.to_string(),
            secs(floor),
            secs(online),
            ratio(online.as_secs_f64(), floor.as_secs_f64()),
            if *n == 10 {
                if online.as_secs_f64() <= 1.3 * floor.as_secs_f64() {
                    "≤ 1.3× met".into()
                } else {
                    "≤ 1.3× MISSED".into()
                }
            } else {
                "—".into()
            },
            secs(pick(|r| r.reconcile)),
        ]);
    }
    println!(
        "\n### Provisioning against the floor (median of {} runs)\n",
        args.reps
    );
    print!("{}", table.render());

    let mut header = vec!["phase (mean s per runner, averaged over runs)".to_owned()];
    header.extend(rounds.keys().map(|n| format!("N={n}")));
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut phases = Table::new(&header_refs);
    for phase in phase_order() {
        let cells: Vec<f64> = rounds
            .values()
            .map(|list| {
                list.iter()
                    .map(|r| r.profile.mean.get(phase).copied().unwrap_or(0.0))
                    .sum::<f64>()
                    / list.len().max(1) as f64
            })
            .collect();
        if cells.iter().all(|v| *v == 0.0) {
            continue;
        }
        let mut row = vec![phase.to_owned()];
        row.extend(cells.iter().map(|v| format!("{v:.2}")));
        phases.row(row);
    }
    println!("\n### Where a runner's time goes\n");
    print!("{}", phases.render());
    Ok(())
}
