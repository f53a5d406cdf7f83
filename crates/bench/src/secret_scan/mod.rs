//! R6, secrets: the real `runner-manager` binary on real Incus, with github-sim on the Incus
//! bridge and a policy service double. One full cycle per registration mode (token, JIT): the
//! daemon reconciles to 2 runners, 2 jobs run (each prints its environment and process list),
//! a signed webhook and `POST /reconcile` replace the finished runners, the daemon stops, and
//! `status` and `flush` run as one-shot commands. Everything the manager exposes is collected
//! on the way and searched for every secret the run handed out:
//!
//! - the PAT (full, first 12 characters, and base64 at all three alignments, standard and
//!   URL-safe), the policy service token, the server API token, the webhook secret;
//! - every registration token, remove token, encoded JIT config and runner credential the sim
//!   issued (`GET /_sim/secrets`), and every one-time policy token the double issued.
//!
//! Places: the daemon's and the commands' logs (JSON and text formats: the daemon uses one, the
//! commands the other, swapped between the modes; `RUST_LOG=debug`), the events log, the
//! state directory, `incus config show` (and `--expanded`) of every instance, `/proc/*/cmdline`
//! and `/proc/*/environ` of every process in every instance (idle runners, then every ~0.3 s
//! while the jobs run, then the replacements), the jobs' own output, and `GET /metrics`,
//! `/runners`, `/health`. A control plants a known value in a process's command line and
//! environment inside an instance and must be found.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use rand::Rng;

use crate::real::Guard;
use crate::table::Table;

mod cycle;
mod outside;
mod policy;
mod scanner;

use cycle::*;
use outside::*;
use policy::*;
use scanner::*;

const REPO: &str = "octo/app";
const RUNNER_VERSION: &str = "2.329.0";
const BRIDGE_IP: &str = "10.123.45.1";
/// The Incus daemon's log (scanned for the lines written during a cycle, when readable).
const INCUS_LOG: &str = "/var/log/incus/incus.log";
/// Bound of one outside command (incus, the binary's one-shot commands).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound of waiting for runners and jobs.
const WAIT: Duration = Duration::from_secs(180);

/// How runners register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Token,
    Jit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Jit => "jit",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub modes: Vec<Mode>,
    /// How long each job sleeps (the "job running" snapshots happen meanwhile).
    pub job_sleep: Duration,
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub place: String,
    pub items: u64,
    pub secrets: u64,
    pub hits: u64,
    /// `true` for the control rows (which must have hits).
    pub control: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Every hit, described (place, item, secret kind, excerpt with the secret masked).
    pub hits: Vec<String>,
    /// Notes on the run (phases, counts).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Hits outside the controls.
    pub fn leaks(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| !r.control)
            .map(|r| r.hits)
            .sum()
    }

    /// Controls that found nothing.
    pub fn failed_controls(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.control && r.hits == 0)
            .count() as u64
    }

    pub fn table(&self) -> String {
        let mut table = Table::new(&["mode", "place", "items scanned", "secrets searched", "hits"]);
        for row in &self.rows {
            let hits = if row.control {
                format!("{} (control, expected ≥ 1)", row.hits)
            } else {
                row.hits.to_string()
            };
            table.row(vec![
                row.mode.clone(),
                row.place.clone(),
                crate::bad_input::thousands(row.items),
                row.secrets.to_string(),
                hits,
            ]);
        }
        table.render()
    }
}

/// Runs the cycles.
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    for mode in &options.modes {
        cycle(options, *mode, &mut outcome).await?;
    }
    Ok(outcome)
}
