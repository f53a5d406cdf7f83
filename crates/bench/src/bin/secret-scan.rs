//! R6, secrets: a full cycle of the real binary on real Incus in token and JIT mode, then a scan
//! of logs, events log, instance configs, processes, job output and the HTTP endpoints for every
//! secret of the run.
//!
//! `cargo run --release -p bench --bin secret-scan [-- --mode token|jit] [--job-sleep S]`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use bench::secret_scan::{run, Mode, Options};
use bench::BinaryArg;

#[derive(Parser)]
#[command(about = "R6: secret scan of a full runner-manager cycle on real Incus")]
struct Args {
    /// Only this registration mode (default: both).
    #[arg(long, value_parser = ["token", "jit"])]
    mode: Option<String>,
    /// Seconds each job sleeps.
    #[arg(long, default_value_t = 4)]
    job_sleep: u64,
    #[command(flatten)]
    binary: BinaryArg,
}

fn main() -> anyhow::Result<ExitCode> {
    bench::suite(|args: Args| async move {
        let started = Instant::now();
        let modes = match args.mode.as_deref() {
            Some("token") => vec![Mode::Token],
            Some("jit") => vec![Mode::Jit],
            _ => vec![Mode::Token, Mode::Jit],
        };
        let options = Options {
            binary: args.binary.path()?,
            modes,
            job_sleep: Duration::from_secs(args.job_sleep),
        };
        let outcome = run(&options).await?;
        for hit in &outcome.hits {
            eprintln!("HIT: {hit}");
        }
        println!(
            "R6 secret scan, wall time {:.1} s\n",
            started.elapsed().as_secs_f64()
        );
        for note in &outcome.notes {
            println!("{note}");
        }
        println!("\n{}", outcome.table());
        Ok(outcome.leaks() == 0 && outcome.failed_controls() == 0)
    })
}
