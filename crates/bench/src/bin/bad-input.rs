//! R5, bad input: config fuzzing, webhook bodies and tampered runner tarballs, counted.
//!
//! `cargo run --release -p bench --bin bad-input -- [--quick] [--seed N]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use bench::bad_input::{given_or_built_binary, run, Options};

#[derive(Parser)]
#[command(about = "R5: bad input (config fuzz, webhook bodies, tampered runner tarballs)")]
struct Args {
    /// The CI subset (fewer cases).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 20_261_127)]
    seed: u64,
    /// The runner-manager binary for the check-config sample (default: built by cargo).
    #[arg(long)]
    binary: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let started = Instant::now();
    let binary = given_or_built_binary(args.binary)?;
    let options = Options {
        quick: args.quick,
        seed: args.seed,
        binary: Some(binary),
    };
    let outcome = run(&options).await?;
    for problem in &outcome.problems {
        eprintln!("FAILURE: {problem}");
    }
    println!(
        "R5 bad input (seed {}, {}), wall time {:.1} s\n",
        options.seed,
        if options.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    println!("{}", outcome.table());
    Ok(if outcome.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
