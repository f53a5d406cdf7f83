//! Reliability suite R1 (busy runners) and R3 (GitHub faults) against github-sim, with the
//! SIMULATION instance provider (`manager::sim_provider`): the checks are about the manager's
//! logic against GitHub, not about LXD.
//!
//! `cargo run --release -p bench --bin chaos -- [--quick] [--seed N] [--busy-lie-rate R]
//! [r1|r1b|r1lie|r3|all]`
//!
//! R1b is R1 plus an owned instance with no registration yet (a creation in flight in another
//! process, or interrupted) that registers and takes a job during the pass. R1-lie (`r1lie`, not
//! part of `all`) is R1 with the sim's busy-lie fault armed for a fraction R of the jobs (default
//! 1: all): GitHub reports busy runners idle and lets their `DELETE` through, killing the job.

use std::sync::Arc;
use std::time::Instant;

use bench::chaos::{r1, r1_busy_lie, r3};
use bench::fleet::{write_tarball, RUNNER_VERSION};
use bench::outside::{Outside, OutsideOptions};
use bench::tally::Tally;

fn main() -> anyhow::Result<()> {
    if let Some(child) = bench::outside::run_child_if_requested() {
        return child;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let mut quick = false;
    let mut which = "all".to_owned();
    let mut seed = None;
    let mut lie_rate = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--seed" => seed = args.next().and_then(|s| s.parse::<u64>().ok()),
            "--busy-lie-rate" => {
                lie_rate = args
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| anyhow::anyhow!("--busy-lie-rate needs a number in 0..=1"))?;
            }
            "r1" | "r1b" | "r1lie" | "r3" | "all" => which = arg,
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: chaos [--quick] [--seed N] \
                 [--busy-lie-rate R] [r1|r1b|r1lie|r3|all]"
            ),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let counts = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(quick, &which, seed, lie_rate))?;
    let failed: u64 = counts.iter().map(|c| c.failures + c.leaks).sum();
    if failed > 0 {
        anyhow::bail!("{failed} failures or leaks");
    }
    Ok(())
}

async fn run(quick: bool, which: &str, seed: u64, lie_rate: f64) -> anyhow::Result<Vec<Tally>> {
    let dir = tempfile::tempdir()?;
    let tarball = write_tarball(dir.path(), 0)?;
    let options = OutsideOptions {
        tarball,
        runner_version: RUNNER_VERSION.to_owned(),
        secondary_per_minute: 10_000,
    };
    let outside = Arc::new(Outside::spawn(&options).await?);
    // (token, JIT) iterations; JIT creations are paced by the manager (70 a minute).
    let (r1_iterations, r1b_iterations, r3_passes) = if quick {
        ((20, 10), (5, 5), 12)
    } else {
        ((1_000, 100), (100, 20), 200)
    };
    println!(
        "reliability suite ({}), seed {seed}: github-sim in a child process, instances from the \
         SIMULATION provider (manager::sim_provider), real manager and GitHub client",
        if quick { "quick" } else { "full" }
    );
    let started = Instant::now();
    let mut all = Vec::new();
    if which == "r1" || which == "all" {
        let counts = r1(&outside, r1_iterations.0, r1_iterations.1, seed, false).await?;
        print!("{}", counts.render());
        all.push(counts);
    }
    if which == "r1b" || which == "all" {
        let counts = r1(&outside, r1b_iterations.0, r1b_iterations.1, seed, true).await?;
        print!("{}", counts.render());
        all.push(counts);
    }
    if which == "r1lie" {
        let counts =
            r1_busy_lie(&outside, r1_iterations.0, r1_iterations.1, seed, lie_rate).await?;
        print!("{}", counts.render());
        all.push(counts);
    }
    if which == "r3" || which == "all" {
        let counts = r3(&outside, r3_passes, seed).await?;
        print!("{}", counts.render());
        all.push(counts);
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(all)
}
