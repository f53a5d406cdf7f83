//! Benchmark: placement and creation of N runners on the REAL 3-member Incus cluster
//! (`scripts/incus-cluster.sh up`), against the floor of N bare parallel launches spread evenly
//! across the same members (`?target=`, round robin) plus one exec each, in the same run. The
//! manager places by its plan (`spread`, the default on a cluster) and is timed from
//! `reconcile(N)` until all N runners are online in github-sim; the runners per member are
//! reported for both.
//!
//! `cargo run --release -p bench --bin cluster [-- --n 30 --runs 3]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::real::{self, median, secs, Guard, Rig};
use bench::table::{ratio, Table};
use clap::Parser;
use manager::RunnerManager;

#[derive(Parser, Debug)]
struct Args {
    /// Runners per run.
    #[arg(long, default_value_t = 30)]
    n: usize,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The manager's CPU overcommit ratio (`[cluster] overcommit_cpu`).
    #[arg(long, default_value_t = 16.0)]
    overcommit_cpu: f64,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

/// Instances under `prefix` per member (their `location`).
async fn per_member(lxd: &lxd::Client, prefix: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for instance in lxd.list_instances().await? {
        if instance.name.starts_with(prefix) {
            *counts.entry(instance.location).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn spread_text(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(member, n)| format!("{member}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// max − min of the per-member counts over `members` (a member with none counts 0).
fn imbalance(counts: &BTreeMap<String, usize>, members: &[String]) -> usize {
    let per: Vec<usize> = members
        .iter()
        .map(|m| counts.get(m).copied().unwrap_or(0))
        .collect();
    per.iter().max().unwrap_or(&0) - per.iter().min().unwrap_or(&0)
}

struct Round {
    floor: Duration,
    floor_spread: BTreeMap<String, usize>,
    online: Duration,
    spread: BTreeMap<String, usize>,
}

/// One `reconcile(n)` from zero, timed until all `n` runners are online; the spread read before
/// the clean-up.
async fn measure(
    rig: &Rig,
    manager: &RunnerManager,
    n: usize,
) -> anyhow::Result<(Duration, BTreeMap<String, usize>)> {
    let online = rig
        .reconcile_online(manager, n, Instant::now(), Duration::from_secs(180))
        .await?;
    let spread = per_member(&rig.lxd, &manager.owner().prefix()).await?;
    rig.clean(manager).await?;
    Ok((online.last(), spread))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // One user of the cluster at a time: its tests kill members.
    let _serial = test_support::cluster::serial().await;
    let socket = test_support::cluster::socket();
    let lxd = lxd::Client::connect(
        lxd::Endpoint::Unix(socket.clone()),
        lxd::Timeouts::default(),
    )
    .await
    .with_context(|| {
        format!(
            "connecting to the cluster at {} (run `sudo ./scripts/incus-cluster.sh up`)",
            socket.display()
        )
    })?;
    let members: Vec<String> = lxd
        .cluster_members()
        .await
        .context("listing the cluster's members")?
        .into_iter()
        .filter(|m| m.status.eq_ignore_ascii_case("online"))
        .map(|m| m.server_name)
        .collect();
    anyhow::ensure!(
        members.len() >= 2,
        "the cluster has {} online member(s); `incus-cluster.sh status` shows them",
        members.len()
    );
    let rig = Rig::start_on(lxd).await?;
    let tag = real::run_tag();
    let _guard = Guard::on_socket(tag.clone(), socket);
    // The members of this one-machine cluster share its 2 CPU threads: each reports 2, so the
    // default CPU overcommit (4.0: 8 one-CPU runners a member) would cap the fleet at 24.
    let (manager, _timeline) = rig
        .manager_with(&format!("{tag}m"), |config| {
            config.overcommit.cpu = args.overcommit_cpu;
        })
        .await?;
    eprintln!(
        "cluster: members {members:?}, sim at {}, instances named {tag}*, N = {}",
        rig.sim.base_url(),
        args.n
    );

    // Warm-up, not measured: a member copies an image from another on its first launch of it.
    let warm = format!("{tag}w-");
    let warmed = rig
        .floor_on(&warm, members.len(), Duration::from_secs(60), &members)
        .await;
    rig.delete_prefix(&warm).await?;
    eprintln!("warm-up (the image on every member): {}", secs(warmed?));

    let mut rounds = Vec::new();
    for run in 0..args.runs {
        let floor_prefix = format!("{tag}f{run}-");
        let floor = rig
            .floor_on(&floor_prefix, args.n, Duration::from_secs(60), &members)
            .await;
        let floor_spread = per_member(&rig.lxd, &floor_prefix).await?;
        rig.delete_prefix(&floor_prefix).await?;
        let floor = floor?;
        let (online, spread) = measure(&rig, &manager, args.n).await?;
        eprintln!(
            "run {run}: floor {} ({}), manager {} ({})",
            secs(floor),
            spread_text(&floor_spread),
            secs(online),
            spread_text(&spread)
        );
        rounds.push(Round {
            floor,
            floor_spread,
            online,
            spread,
        });
    }

    let mut table = Table::new(&[
        "run",
        "floor: N bare launches spread + exec",
        "floor per member",
        "manager: reconcile(N) → all online",
        "manager per member",
        "max − min",
        "ratio",
    ]);
    for (i, r) in rounds.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            secs(r.floor),
            spread_text(&r.floor_spread),
            secs(r.online),
            spread_text(&r.spread),
            imbalance(&r.spread, &members).to_string(),
            ratio(r.online.as_secs_f64(), r.floor.as_secs_f64()),
        ]);
    }
    let floor = median(&rounds.iter().map(|r| r.floor).collect::<Vec<_>>());
    let online = median(&rounds.iter().map(|r| r.online).collect::<Vec<_>>());
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r.online.as_secs_f64() / r.floor.as_secs_f64().max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "\n### Placement and creation on the cluster: N = {} over {} members, {} run(s)\n",
        args.n,
        members.len(),
        args.runs
    );
    print!("{}", table.render());
    println!(
        "\nmedian: floor {}, manager {}, ratio (median of per-run ratios) {median_ratio:.2}× \
         (target ≤ 1.30×: {})",
        secs(floor),
        secs(online),
        if median_ratio <= 1.3 { "met" } else { "MISSED" }
    );
    let worst = rounds
        .iter()
        .map(|r| imbalance(&r.spread, &members))
        .max()
        .unwrap_or(0);
    println!("largest per-member imbalance of the manager's placement: {worst} (spread: ≤ 1)");
    Ok(())
}
