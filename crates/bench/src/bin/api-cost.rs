//! Benchmark 2: GitHub requests per idle steady-state reconcile (N = 10, 100, 1000) and the cost
//! of scaling 0 → 100, against github-sim, compared with the seed's algorithm.
//!
//! `cargo run --release -p bench --bin api-cost`

use std::time::{Duration, Instant};

use anyhow::Context;
use bench::fleet::{spawn_outside, write_tarball, Fleet};
use bench::outside::RestCost;
use bench::seed;
use bench::table::{ratio, Table};
use manager::RegistrationMode;

/// Measured idle passes per N (after one warm-up pass).
const PASSES: u64 = 5;

fn main() -> anyhow::Result<()> {
    bench::main(|bench::NoArgs {}| run())
}

struct Idle {
    n: usize,
    per_pass: RestCost,
    bare_list: RestCost,
}

async fn idle(dir: &std::path::Path, n: usize) -> anyhow::Result<Idle> {
    let outside = spawn_outside(dir).await?;
    let fleet = Fleet::new(&outside, "bench", RegistrationMode::Token, 8).await?;
    fleet.converge(n, 3).await?;
    outside
        .wait_online_idle(n, Duration::from_secs(30))
        .await
        .context("steady state")?;
    // Warm-up: the first pass after the fleet settled fills the ETag cache.
    fleet.converge(n, 1).await?;
    outside.reset_request_counts().await?;
    for _ in 0..PASSES {
        let report = fleet.manager.reconcile(n, &fleet.resources).await?;
        anyhow::ensure!(
            report.created.is_empty()
                && report.removed.is_empty()
                && report.failed.is_empty()
                && report.counts.idle == n,
            "pass was not idle: {report:?}"
        );
    }
    let total = RestCost::from_counts(&outside.request_counts().await?);
    outside.wait_online_idle(n, Duration::from_secs(5)).await?;
    let per_pass = RestCost {
        requests: total.requests / PASSES,
        rate_limit_cost: total.rate_limit_cost / PASSES,
        not_modified: total.not_modified / PASSES,
        content_creating: total.content_creating / PASSES,
        list_gets: total.list_gets / PASSES,
    };
    anyhow::ensure!(
        per_pass.requests * PASSES == total.requests,
        "passes differ: {total:?}"
    );
    // Baseline measured in the same run: one unconditional paged list by a fresh client.
    outside.reset_request_counts().await?;
    let fresh = github::Client::new(github::ClientConfig::new(
        url::Url::parse(&outside.api_url())?,
        url::Url::parse(outside.base_url())?,
        github::Scope::parse(bench::fleet::REPO)?,
        github::Auth::Token(github::Secret::new(github_sim::DEFAULT_TOKEN)),
    ))?;
    let listed = fresh.list_runners(None).await?;
    anyhow::ensure!(listed.len() == n, "bare list saw {} runners", listed.len());
    let bare_list = RestCost::from_counts(&outside.request_counts().await?);
    Ok(Idle {
        n,
        per_pass,
        bare_list,
    })
}

struct Scale {
    mode: &'static str,
    passes: usize,
    elapsed: Duration,
    cost: RestCost,
    refused: u64,
    registrations: u64,
}

async fn scale(dir: &std::path::Path, mode: RegistrationMode) -> anyhow::Result<Scale> {
    let outside = spawn_outside(dir).await?;
    let fleet = Fleet::new(&outside, "bench", mode, 4).await?;
    outside.reset_request_counts().await?;
    let before = fleet.client.stats();
    let started = Instant::now();
    let passes = fleet.converge(100, 60).await?;
    let elapsed = started.elapsed();
    outside
        .wait_online_idle(100, Duration::from_secs(30))
        .await?;
    let counts = outside.request_counts().await?;
    let after = fleet.client.stats();
    let refused = after.total().rate_limit_waits - before.total().rate_limit_waits;
    let registrations = counts.get("POST /_runner/register").map_or(0, |c| c.count);
    Ok(Scale {
        mode: match mode {
            RegistrationMode::Token => "token",
            RegistrationMode::Jit => "jit",
        },
        passes,
        elapsed,
        cost: RestCost::from_counts(&counts),
        refused,
        registrations,
    })
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tarball(dir.path(), 0)?;
    let started = Instant::now();

    let mut idle_rows = Vec::new();
    for n in [10, 100, 1000] {
        let row = idle(dir.path(), n).await?;
        eprintln!("idle N={n}: {:?}", row.per_pass);
        idle_rows.push(row);
    }
    let mut table = Table::new(&[
        "N",
        "requests/pass",
        "of which 304",
        "rate-limit cost/pass",
        "POSTs/pass",
        "target ⌈N/100⌉ req, 0 cost",
        "seed requests (= cost)",
        "seed POSTs",
        "seed `ps` execs",
        "requests vs seed",
        "cost vs seed",
        "bare list, no ETag (same run)",
    ]);
    for r in &idle_rows {
        let p = r.per_pass;
        let target = seed::target_idle_requests(r.n);
        let met = p.requests <= target && p.rate_limit_cost == 0;
        table.row(vec![
            r.n.to_string(),
            p.requests.to_string(),
            p.not_modified.to_string(),
            p.rate_limit_cost.to_string(),
            p.content_creating.to_string(),
            format!("{target} / 0: {}", if met { "met" } else { "MISSED" }),
            seed::idle_requests(r.n).to_string(),
            seed::idle_content_creating().to_string(),
            r.n.to_string(),
            ratio(p.requests as f64, seed::idle_requests(r.n) as f64),
            ratio(p.rate_limit_cost as f64, seed::idle_rate_cost(r.n) as f64),
            format!(
                "{} req, cost {}",
                r.bare_list.requests, r.bare_list.rate_limit_cost
            ),
        ]);
    }
    println!("\n### Idle steady-state reconcile ({PASSES} passes per N, per-pass figures)\n");
    print!("{}", table.render());

    let mut scale_rows = Vec::new();
    for mode in [RegistrationMode::Token, RegistrationMode::Jit] {
        let row = scale(dir.path(), mode).await?;
        eprintln!(
            "scale 0→100 {}: {:?} in {:?}",
            row.mode, row.cost, row.elapsed
        );
        scale_rows.push(row);
    }
    let mut table = Table::new(&[
        "mode",
        "passes",
        "wall time",
        "REST requests",
        "rate-limit cost",
        "content-creating POSTs",
        "POSTs sent in the busiest minute (limit 80)",
        "403 secondary-limit answers",
        "runner-protocol registrations",
        "seed requests (1 pass)",
        "requests vs seed",
    ]);
    for r in &scale_rows {
        // A run shorter than a minute sent all its POSTs in one window. A longer one was paced
        // by GitHub's 403s: the busiest minute held the 80 accepted POSTs plus the refused ones
        // (the client sleeps out each `retry-after` before trying again).
        let per_minute = if r.elapsed < Duration::from_secs(60) {
            r.cost.content_creating
        } else {
            80 + r.refused
        };
        table.row(vec![
            r.mode.to_owned(),
            r.passes.to_string(),
            format!("{:.1} s", r.elapsed.as_secs_f64()),
            r.cost.requests.to_string(),
            r.cost.rate_limit_cost.to_string(),
            r.cost.content_creating.to_string(),
            format!(
                "{per_minute}: {}",
                if r.refused == 0 && per_minute <= 80 {
                    "within"
                } else {
                    "EXCEEDED (GitHub refused some)"
                }
            ),
            r.refused.to_string(),
            r.registrations.to_string(),
            seed::scale_requests(0).to_string(),
            ratio(r.cost.requests as f64, seed::scale_requests(0) as f64),
        ]);
    }
    println!("\n### Scaling 0 → 100 (until a pass creates nothing)\n");
    print!("{}", table.render());
    println!(
        "\nseed formulas: idle pass = (1 + max(1, ⌈N/100⌉)) list GETs + 1 remove-token POST, all \
         rate-limited; scale pass = 2 list GETs + registration-token + remove-token POSTs.\n\
         total run time {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
