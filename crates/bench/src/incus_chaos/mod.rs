//! Reliability checks on REAL Incus with the REAL `runner-manager` binary (issue 6):
//!
//! - **R2, crashes.** `runner-manager reconcile` is SIGKILLed at a random moment while it creates
//!   runners (from an empty or partial fleet up to `quantity`), and `runner-manager flush` (some
//!   with `--idle-only`) at a random moment while it removes them. The moment is uniform within
//!   the measured duration of an uninterrupted run of the same operation from the same state.
//!   After each kill ONE clean `runner-manager reconcile` must exit 0 and leave exactly `quantity`
//!   owned instances, no orphan instance (no registration), no dangling registration (no
//!   instance), and every registration online (waited for, bounded).
//! - **R4, daemon restart.** `scripts/incus-env.sh restart` restarts incusd while a reconcile is
//!   creating instances. The pass must end cleanly (an exit status, no panic, within its
//!   timeouts) and the next reconcile must converge as above.
//!
//! The checks read both sides themselves, not through the manager: instances from Incus
//! (name prefix and the owner config keys, `manager::Owner::owns_instance`), registrations from
//! the in-process github-sim. Each run uses its own app name (`chaos<5 letters>`); a [`Guard`]
//! deletes every instance under it, even on panic, and the run ends with a flush and a leak count.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use github_sim::{RunnerView, Sim, SimConfig, SimHandle};
use manager::Owner;

use crate::chaos::Rng;
use crate::real::Guard;
use crate::table::Table;
use crate::tally::Tally;

mod r2;
mod r4;
mod tally;
mod world;

pub use r2::*;
pub use r4::*;
pub use tally::*;
pub use world::*;

/// The repository the simulator serves.
pub const REPO: &str = "chaos/app";
const RUNNER_VERSION: &str = "2.331.0";
/// Upper bound of one uninterrupted command: above the binary's own bounds (Incus operation
/// timeout 180 s, `ready_timeout` 300 s), since Incus 6.0.4 was seen stalling every container
/// start for 60-90 s (its start hook) on this shared host.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(420);
/// How long the fleet may take, after the clean pass and with no further manager action, to
/// show every runner registered and online (runners go online about a second after `run.sh`).
const ONLINE_WAIT: Duration = Duration::from_secs(30);
/// Upper bound of a reconcile whose Incus daemon restarted under it: the binary's longest own
/// bound (the install's last exec: 120 s + `ready_timeout` 300 s + 10 s) plus slack. Longer
/// counts as a hang.
const RESTART_PASS_BOUND: Duration = Duration::from_secs(480);
/// How long [`World::settle`] may take (a deregistered runner notices within its 20 s long poll).
const SETTLE_BOUND: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `runner-manager` binary under test.
    pub binary: PathBuf,
    /// `scripts/incus-env.sh` (for R4's `restart`).
    pub incus_env: PathBuf,
    pub quantity: u32,
    pub create_kills: u64,
    pub flush_kills: u64,
    pub restarts: u64,
    /// Uninterrupted runs per phase whose median is the kill window.
    pub measure_runs: u32,
    /// No new iteration starts after this moment (the tally then says how many ran).
    pub deadline: Option<Instant>,
    pub seed: u64,
    /// The host's address on the Incus bridge (the simulator listens there).
    pub bridge_ip: std::net::IpAddr,
}

impl Options {
    /// Whether the time budget is spent; records it in `tally` when it is.
    fn out_of_time(&self, tally: &mut Tally) -> bool {
        let out = self.deadline.is_some_and(|d| Instant::now() >= d);
        if out {
            tally.add("stopped early by --time-budget", 1);
        }
        out
    }

    /// R2 50 + 50 kills and R4 5 restarts on 3 runners; `quick`: 3 + 3 kills, 1 restart, 2 runners.
    pub fn new(binary: PathBuf, incus_env: PathBuf, quick: bool, seed: u64) -> Self {
        let (quantity, create_kills, flush_kills, restarts) =
            if quick { (2, 3, 3, 1) } else { (3, 50, 50, 5) };
        Self {
            binary,
            incus_env,
            quantity,
            create_kills,
            flush_kills,
            restarts,
            measure_runs: if quick { 1 } else { 3 },
            deadline: None,
            seed,
            bridge_ip: std::net::IpAddr::from([10, 123, 45, 1]),
        }
    }
}

/// Runs the named checks (`r2`, `r2-create`, `r2-flush`, `r4`, `all`) in one world and ends
/// with the leak check; the leaks are added to the last tally.
pub async fn run(options: &Options, which: &str) -> anyhow::Result<Vec<Tally>> {
    let world = World::start(options).await?;
    let mut tallies = Vec::new();
    let result = async {
        if matches!(which, "r2" | "r2-create" | "all") {
            tallies.push(r2_create(&world, options).await?);
        }
        if matches!(which, "r2" | "r2-flush" | "all") {
            tallies.push(r2_flush(&world, options).await?);
        }
        if matches!(which, "r4" | "all") {
            tallies.push(r4_restart(&world, options).await?);
        }
        anyhow::Ok(())
    }
    .await;
    let teardown = world.teardown().await;
    result?;
    let (leaked, remaining) = teardown?;
    let mut leak = Tally::new("leak check (final flush)");
    leak.iterations = 1;
    leak.leaks = leaked;
    leak.add("left after flush, deleted by hand", leaked);
    leak.add("instances with the prefix at the end", remaining);
    if remaining > 0 {
        leak.fail_and_print(format!(
            "{remaining} instance(s) remain under {}",
            world.prefix()
        ));
    }
    tallies.push(leak);
    Ok(tallies)
}
