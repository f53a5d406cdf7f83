//! The plan's cost on a cluster at N = 10,000 runners over 50 simulated members (SIMULATION):
//! CPU time per pass of observation → plan → placement, in four scenarios (see
//! `bench::placement`). Target: at most 100 ms of CPU per pass.
//!
//! `cargo run --release -p bench --bin placement [-- RUNNERS MEMBERS PASSES]`

use bench::placement::{run, CPU_TARGET};
use bench::table::Table;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let runners = args.first().copied().unwrap_or(10_000);
    let members = args.get(1).copied().unwrap_or(50);
    let passes = u32::try_from(args.get(2).copied().unwrap_or(20))?;
    anyhow::ensure!(
        runners > 0 && members > 1 && passes > 0,
        "RUNNERS > 0, MEMBERS > 1, PASSES > 0"
    );
    let rows = bench::block_on(run(runners, members, passes))?;
    let mut table = Table::new(&[
        "scenario",
        "runners",
        "members",
        "CPU per pass",
        "wall per pass",
        "lost",
        "placed",
        "shortfall",
        "placed per member (max/min)",
    ]);
    for r in &rows {
        table.row(vec![
            r.scenario.to_owned(),
            r.runners.to_string(),
            r.members.to_string(),
            format!("{:.1} ms", r.cpu.as_secs_f64() * 1000.0),
            format!("{:.1} ms", r.wall.as_secs_f64() * 1000.0),
            r.lost.to_string(),
            r.placed.to_string(),
            r.shortfall.to_string(),
            format!("{}/{}", r.spread.0, r.spread.1),
        ]);
    }
    println!("{}", table.render());
    let worst = rows.iter().map(|r| r.cpu).max().unwrap_or_default();
    println!(
        "worst CPU per pass: {:.1} ms (target ≤ {} ms): {}",
        worst.as_secs_f64() * 1000.0,
        CPU_TARGET.as_millis(),
        if worst <= CPU_TARGET { "PASS" } else { "FAIL" }
    );
    anyhow::ensure!(worst <= CPU_TARGET, "over the CPU target");
    Ok(())
}
