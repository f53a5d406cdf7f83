//! R5, bad input: config fuzzing, webhook bodies and tampered runner tarballs, counted.
//!
//! `cargo run --release -p bench --bin bad-input -- [--quick] [--seed N]`

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use bench::bad_input::{run, Options};
use bench::BinaryArg;

#[derive(Parser)]
#[command(about = "R5: bad input (config fuzz, webhook bodies, tampered runner tarballs)")]
struct Args {
    /// The CI subset (fewer cases).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 20_261_127)]
    seed: u64,
    // The binary of the check-config sample.
    #[command(flatten)]
    binary: BinaryArg,
}

fn main() -> anyhow::Result<ExitCode> {
    bench::suite(|args: Args| async move {
        let started = Instant::now();
        let options = Options {
            quick: args.quick,
            seed: args.seed,
            binary: Some(args.binary.path()?),
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
        Ok(outcome.failures() == 0)
    })
}
