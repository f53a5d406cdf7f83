//! R5, bad input: counted runs of (1) config fuzzing against the loader the binary uses
//! (`runner_manager::config::Config::load`) plus a sample through the real binary's
//! `check-config`, (2) webhook requests against the real axum router of `runner_manager::server`
//! (in-process, `tower::ServiceExt::oneshot`), and (3) tampered runner tarballs served by
//! github-sim's downloads endpoint against the manager's update and re-verification path
//! (`RunnerManager::update_runner_bin`, and `reconcile`, which re-reads the cache).
//!
//! Every check also runs a control that must pass (valid configs accepted, valid deliveries
//! triggering, a correct tarball installed), so a check that could never fail shows up.
//!
//! This module is the runner that ties the checks together: options, the result table, and
//! [`run`]. The checks are `config_inputs` + `config_fuzz`, `webhooks` and `tarballs`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;

use crate::table::Table;

mod config_fuzz;
mod config_inputs;
mod tarballs;
mod webhooks;

use config_fuzz::config_fuzz;
use tarballs::tarballs;
use webhooks::webhooks;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CI subset: fewer cases of every kind.
    pub quick: bool,
    pub seed: u64,
    /// The `runner-manager` binary for the `check-config` sample; `None` skips that sample.
    pub binary: Option<PathBuf>,
}

impl Options {
    fn config_inputs(&self) -> usize {
        if self.quick {
            3_000
        } else {
            10_000
        }
    }
    fn binary_samples(&self) -> usize {
        if self.quick {
            20
        } else {
            200
        }
    }
    fn webhook_scale(&self) -> usize {
        if self.quick {
            1
        } else {
            5
        }
    }
    fn tarball_scale(&self) -> usize {
        if self.quick {
            1
        } else {
            4
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub check: String,
    pub cases: u64,
    pub failures: u64,
    pub evidence: String,
}

/// All rows, and a description of each failure (at most a few per check).
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn failures(&self) -> u64 {
        self.rows.iter().map(|r| r.failures).sum()
    }

    pub fn table(&self) -> String {
        let mut table = Table::new(&["check", "cases", "failures", "evidence"]);
        for row in &self.rows {
            table.row(vec![
                row.check.clone(),
                thousands(row.cases),
                row.failures.to_string(),
                row.evidence.clone(),
            ]);
        }
        table.render()
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 60 {
            self.problems.push(text);
        }
    }
}

/// The `runner-manager` binary a benchmark was `given` on its command line, or else
/// [`runner_manager_binary`], built first.
pub fn given_or_built_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => runner_manager_binary(true),
    }
}

/// The `runner-manager` binary of this build profile (`$RUNNER_MANAGER_BIN` wins): next to the
/// running executable's profile directory. With `build`, `cargo build -p runner-manager` runs
/// first (never from a test: `cargo test` holds the build lock while tests run).
pub fn runner_manager_binary(build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUNNER_MANAGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_owned();
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?.to_owned();
    }
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "-p", "runner-manager", "--bin", "runner-manager"]);
        if dir.ends_with("release") {
            command.arg("--release");
        }
        if let Some(target) = dir.parent() {
            command.env("CARGO_TARGET_DIR", target);
        }
        let status = command.status().context("running cargo build")?;
        anyhow::ensure!(
            status.success(),
            "cargo build -p runner-manager failed: {status}"
        );
    }
    let path = dir.join("runner-manager");
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it (cargo build -p runner-manager) or set RUNNER_MANAGER_BIN",
        path.display()
    );
    Ok(path)
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the three checks.
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    config_fuzz(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] config fuzz done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    webhooks(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] webhooks done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tarballs(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] tarballs done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(outcome)
}

/// A random string over `alphabet` (used by the inputs of every check, and by the secrets of
/// the secret scan).
pub(crate) fn random_string(rng: &mut impl Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
