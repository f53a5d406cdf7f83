//! Reliability checks R2 (kill -9 of `runner-manager reconcile` mid-create and `flush`
//! mid-removal) and R4 (incusd restarted mid-reconcile) on REAL Incus with the REAL binary; see
//! `bench::incus_chaos`.
//!
//! ```text
//! cargo build --release -p runner-manager
//! cargo run --release -p bench --bin chaos-incus -- [--quick] [--seed N] [--binary PATH]
//!     [--incus-env PATH] [--quantity N] [--create-kills N] [--flush-kills N] [--restarts N]
//!     [--time-budget SECONDS] [r2|r2-create|r2-flush|r4|all]
//! ```
//!
//! `--binary` defaults to `runner-manager` next to this executable (the same target profile
//! directory: build both with the same profile). `--incus-env` defaults to the repository's
//! `scripts/incus-env.sh`. Full: 3 runners, 50 + 50 kills, 5 restarts; `--quick`: 2 runners,
//! 3 + 3 kills, 1 restart. R4 restarts the shared Incus daemon: run it alone (not beside other
//! tests). Needs root, a running Incus (`scripts/incus-env.sh up`) and the static fake runner
//! (`scripts/build-fake-runner.sh`). `--time-budget` stops starting iterations after that many
//! seconds (the table then shows how many ran). Exits 1 when any check has a failure or a leak.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bench::incus_chaos::{render, run, Options};

const USAGE: &str = "usage: chaos-incus [--quick] [--seed N] [--binary PATH] [--incus-env PATH] \
    [--quantity N] [--create-kills N] [--flush-kills N] [--restarts N] [--time-budget SECONDS] \
    [r2|r2-create|r2-flush|r4|all]";

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut which = "all".to_owned();
    let mut seed = None;
    let mut binary = None;
    let mut incus_env = None;
    let mut overrides: Vec<(String, u64)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--quick" => quick = true,
            "--seed" => seed = Some(value("--seed")?.parse::<u64>().context("--seed")?),
            "--binary" => binary = Some(PathBuf::from(value("--binary")?)),
            "--incus-env" => incus_env = Some(PathBuf::from(value("--incus-env")?)),
            "--quantity" | "--create-kills" | "--flush-kills" | "--restarts" | "--time-budget" => {
                let n = value(&arg)?.parse::<u64>().with_context(|| arg.clone())?;
                overrides.push((arg.clone(), n));
            }
            "r2" | "r2-create" | "r2-flush" | "r4" | "all" => which = arg,
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let binary = match binary {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the executable's directory")?
            .join("runner-manager"),
    };
    let incus_env = incus_env.unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/incus-env.sh"
        ))
    });
    let mut options = Options::new(binary, incus_env, quick, seed);
    for (name, n) in overrides {
        match name.as_str() {
            "--quantity" => {
                options.quantity = u32::try_from(n)
                    .ok()
                    .filter(|q| *q >= 1)
                    .context("--quantity >= 1")?
            }
            "--create-kills" => options.create_kills = n,
            "--flush-kills" => options.flush_kills = n,
            "--time-budget" => {
                options.deadline = Some(Instant::now() + std::time::Duration::from_secs(n))
            }
            _ => options.restarts = n,
        }
    }
    println!(
        "incus chaos ({}), seed {seed}: binary {}, {} runners, {} create kills, {} flush kills, {} restarts",
        if quick { "quick" } else { "full" },
        options.binary.display(),
        options.quantity,
        options.create_kills,
        options.flush_kills,
        options.restarts
    );
    let started = Instant::now();
    let tallies = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&options, &which))?;
    print!("{}", render(&tallies));
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    let bad: u64 = tallies.iter().map(|t| t.failures + t.leaks).sum();
    if bad > 0 {
        anyhow::bail!("{bad} failures or leaks");
    }
    Ok(())
}
