//! R6, secrets: a full cycle of the real binary on real Incus in token and JIT mode, then a scan
//! of logs, events log, instance configs, processes, job output and the HTTP endpoints for every
//! secret of the run.
//!
//! `cargo run --release -p bench --bin secret-scan [-- --mode token|jit] [--job-sleep S]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use bench::bad_input::given_or_built_binary;
use bench::secret_scan::{run, Mode, Options};

#[derive(Parser)]
#[command(about = "R6: secret scan of a full runner-manager cycle on real Incus")]
struct Args {
    /// Only this registration mode (default: both).
    #[arg(long, value_parser = ["token", "jit"])]
    mode: Option<String>,
    /// Seconds each job sleeps.
    #[arg(long, default_value_t = 4)]
    job_sleep: u64,
    /// The runner-manager binary (default: built by cargo).
    #[arg(long)]
    binary: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let started = Instant::now();
    let binary = given_or_built_binary(args.binary)?;
    let modes = match args.mode.as_deref() {
        Some("token") => vec![Mode::Token],
        Some("jit") => vec![Mode::Jit],
        _ => vec![Mode::Token, Mode::Jit],
    };
    let options = Options {
        binary,
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
    Ok(if outcome.leaks() == 0 && outcome.failed_controls() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
