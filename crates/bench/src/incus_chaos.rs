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

// ------------------------------------------------------------------------------------ counts

/// The counts of one check.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub check: String,
    pub iterations: u64,
    pub failures: u64,
    /// Instances or registrations left after the final cleanup.
    pub leaks: u64,
    /// Named counts showing what was exercised (where the kills landed, what the passes did).
    pub evidence: Vec<(String, u64)>,
    /// One line per failure (iteration and reason).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn new(check: &str) -> Self {
        Self {
            check: check.to_owned(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, key: &str, n: u64) {
        match self.evidence.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v += n,
            None => self.evidence.push((key.to_owned(), n)),
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.evidence
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, v)| *v)
    }

    pub fn fail(&mut self, note: String) {
        eprintln!("[{}] FAILURE: {note}", self.check);
        self.failures += 1;
        self.notes.push(note);
    }
}

/// `check | iterations | failures | leaks | evidence`, then the failure notes.
pub fn render(tallies: &[Tally]) -> String {
    let mut table = Table::new(&[
        "check",
        "iterations",
        "failures",
        "leaks",
        "time",
        "evidence",
    ]);
    for t in tallies {
        let evidence: Vec<String> = t
            .evidence
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        table.row(vec![
            t.check.clone(),
            t.iterations.to_string(),
            t.failures.to_string(),
            t.leaks.to_string(),
            format!("{:.0} s", t.elapsed.as_secs_f64()),
            evidence.join("; "),
        ]);
    }
    let mut out = table.render();
    for t in tallies {
        for note in &t.notes {
            out.push_str(&format!("FAILURE {}: {note}\n", t.check));
        }
    }
    out
}

// ------------------------------------------------------------------------------------ world

/// The exit of one command.
#[derive(Debug)]
pub struct Output {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Output {
    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// The last warning or error lines of stderr, shortened (for a failure note).
    fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("error"))
            .collect();
        let lines = if lines.is_empty() {
            self.stderr.lines().collect()
        } else {
            lines
        };
        lines[lines.len().saturating_sub(2)..]
            .iter()
            .map(|l| {
                let l = l.split_once("Z ").map_or(*l, |(_, rest)| rest);
                l.chars().take(400).collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn panicked(&self) -> bool {
        self.code == Some(101) || self.stderr.contains("panicked at")
    }
}

/// Both sides as the checks see them (this run's prefix only).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Owned instances (prefix, name form and config keys) → status.
    pub owned: BTreeMap<String, String>,
    /// Instances under the prefix that are not owned (missing keys): never expected.
    pub unowned: Vec<String>,
    pub registrations: BTreeMap<String, RunnerView>,
}

impl Snapshot {
    pub fn orphans(&self) -> Vec<&str> {
        self.owned
            .keys()
            .filter(|n| !self.registrations.contains_key(*n))
            .map(String::as_str)
            .collect()
    }

    pub fn dangling(&self) -> Vec<&str> {
        self.registrations
            .keys()
            .filter(|n| !self.owned.contains_key(*n))
            .map(String::as_str)
            .collect()
    }

    pub fn offline(&self) -> Vec<&str> {
        self.registrations
            .values()
            .filter(|r| r.status != "online")
            .map(|r| r.name.as_str())
            .collect()
    }

    /// `None` when the fleet is exactly `quantity` healthy runners (online aside), else why not.
    pub fn fleet_problem(&self, quantity: usize) -> Option<String> {
        let mut problems = Vec::new();
        if self.owned.len() != quantity {
            problems.push(format!("{} owned instances", self.owned.len()));
        }
        if !self.unowned.is_empty() {
            problems.push(format!("unowned instances {:?}", self.unowned));
        }
        let orphans = self.orphans();
        if !orphans.is_empty() {
            problems.push(format!("orphans {orphans:?}"));
        }
        let dangling = self.dangling();
        if !dangling.is_empty() {
            problems.push(format!("dangling {dangling:?}"));
        }
        let stopped: Vec<_> = self
            .owned
            .iter()
            .filter(|(_, s)| s.as_str() != "Running")
            .map(|(n, s)| format!("{n} {s}"))
            .collect();
        if !stopped.is_empty() {
            problems.push(format!("not running {stopped:?}"));
        }
        (!problems.is_empty()).then(|| format!("expected {quantity}: {}", problems.join(", ")))
    }

    /// One line: `3 instances, 2 registered (1 online)`.
    pub fn summary(&self) -> String {
        format!(
            "{} instances, {} registrations ({} online), {} orphans, {} dangling",
            self.owned.len(),
            self.registrations.len(),
            self.registrations.len() - self.offline().len(),
            self.orphans().len(),
            self.dangling().len()
        )
    }
}

/// The simulator on the Incus bridge, a config file for the binary, and the Incus client.
pub struct World {
    pub app: String,
    pub owner: Owner,
    pub sim: SimHandle,
    pub lxd: lxd::Client,
    dir: tempfile::TempDir,
    config: PathBuf,
    binary: PathBuf,
    quantity: u32,
    started: Instant,
    _guard: Guard,
}

impl World {
    /// Starts the simulator, writes the config and caches the runner binary (`runner-bin update`).
    pub async fn start(options: &Options) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.binary.is_file(),
            "no runner-manager binary at {} (build it: cargo build -p runner-manager, or pass --binary)",
            options.binary.display()
        );
        let app = random_app();
        let owner = Owner::new(&app, 0)?;
        let guard = Guard::new(format!("{app}-"));
        let agent = github_sim::tarball::locate_or_build_agent()
            .context("the fake runner agent (./scripts/build-fake-runner.sh)")?;
        let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
        let sim = Sim::start(
            SimConfig::default()
                .with_listen(SocketAddr::new(options.bridge_ip, 0))
                .with_repo(REPO)
                .with_runner_tarball(tarball, RUNNER_VERSION),
        )
        .await
        .context("starting github-sim on the Incus bridge (sudo ./scripts/incus-env.sh up)")?;
        let lxd = lxd::Client::connect(
            lxd::Endpoint::discover().context("an Incus socket")?,
            lxd::Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(60),
                operation: Duration::from_secs(180),
            },
        )
        .await
        .context("connecting to Incus")?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("github-token"), sim.token().expose())?;
        let config = dir.path().join("config.toml");
        let world = Self {
            app,
            owner,
            sim,
            lxd,
            config,
            binary: options.binary.clone(),
            quantity: options.quantity,
            dir,
            started: Instant::now(),
            _guard: guard,
        };
        world.write_config()?;
        let update = world.run(&["runner-bin", "update", "--json"]).await?;
        anyhow::ensure!(
            update.code == Some(0),
            "runner-bin update: {:?} {}",
            update.code,
            update.tail()
        );
        world.log(&format!(
            "simulator at {}, binary {}",
            world.sim.base_url(),
            world.binary.display()
        ));
        Ok(world)
    }

    /// A progress line on stderr, with the time since the start.
    pub fn log(&self, what: &str) {
        eprintln!(
            "[{} +{:7.1}s] {what}",
            self.app,
            self.started.elapsed().as_secs_f64()
        );
    }

    pub fn prefix(&self) -> String {
        format!("{}-", self.app)
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let text = crate::real::binary_config(
            &self.app,
            REPO,
            &self.dir.path().join("state"),
            &self.dir.path().join("github-token"),
            &self.sim,
            self.quantity,
        );
        std::fs::write(&self.config, text).context("writing config.toml")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
            .env_remove("RUNNER_MANAGER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `runner-manager --config <config> <args>` to its end (bounded).
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let started = Instant::now();
        let output = tokio::time::timeout(COMMAND_TIMEOUT, self.command(args).output())
            .await
            .with_context(|| format!("runner-manager {args:?} took over {COMMAND_TIMEOUT:?}"))?
            .context("running runner-manager")?;
        Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        })
    }

    /// Both sides now.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let prefix = self.prefix();
        let mut snapshot = Snapshot::default();
        // Retried: right after a daemon restart the pooled connection is dead.
        let mut listed = self.lxd.list_instances().await;
        for _ in 0..5 {
            if listed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            listed = self.lxd.list_instances().await;
        }
        for instance in listed.context("listing instances")? {
            if !instance.name.starts_with(&prefix) {
                continue;
            }
            if self.owner.owns_instance(&instance.name, &instance.config) {
                snapshot.owned.insert(instance.name, instance.status);
            } else {
                snapshot.unowned.push(instance.name);
            }
        }
        snapshot.registrations = self
            .sim
            .runners()
            .into_iter()
            .filter(|r| r.name.starts_with(&prefix))
            .map(|r| (r.name.clone(), r))
            .collect();
        Ok(snapshot)
    }

    /// A reconcile (towards `quantity`, or the config's) that must exit 0; its JSON document.
    pub async fn reconcile(
        &self,
        quantity: Option<u32>,
    ) -> anyhow::Result<(Output, serde_json::Value)> {
        let q = quantity.map(|q| q.to_string());
        let mut args = vec!["reconcile", "--json"];
        if let Some(q) = &q {
            args.extend(["--quantity", q.as_str()]);
        }
        let out = self.run(&args).await?;
        let doc = out.json().unwrap_or(serde_json::Value::Null);
        if out.code != Some(0) {
            bail!("reconcile exited {:?} ({}): {}", out.code, doc, out.tail());
        }
        Ok((out, doc))
    }

    /// Waits (bounded by [`ONLINE_WAIT`], with no manager action) until the fleet is exactly
    /// `quantity` running owned instances, each registered and online, and no dangling
    /// registration. `Ok(None)` when that held at once, `Ok(Some(problem))` when it held only
    /// after a wait (what was wrong at first: an install exec of a killed pass still running in
    /// the instance, or a delete it had started), `Err` when it never held.
    ///
    /// `deregistered`: runners that were registered before the kill. One of them still there
    /// without its registration can never register again (its `config.sh` ran): that fails at
    /// once instead of after the wait.
    pub async fn check_fleet(
        &self,
        quantity: usize,
        registered_before: &BTreeSet<String>,
    ) -> Result<Option<String>, String> {
        let deadline = Instant::now() + ONLINE_WAIT;
        let mut first: Option<String> = None;
        loop {
            let snapshot = self.snapshot().await.map_err(|e| format!("{e:#}"))?;
            let deregistered: Vec<&str> = snapshot
                .orphans()
                .into_iter()
                .filter(|n| registered_before.contains(*n))
                .collect();
            if !deregistered.is_empty() {
                return Err(format!(
                    "instances whose registration is gone (deleted by the killed pass) kept, not \
                     replaced: {deregistered:?}; fleet: {}",
                    snapshot.fleet_problem(quantity).unwrap_or_default()
                ));
            }
            let problem = snapshot.fleet_problem(quantity).or_else(|| {
                let offline = snapshot.offline();
                (!offline.is_empty()).then(|| format!("offline {offline:?}"))
            });
            let Some(problem) = problem else {
                return Ok(first);
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "not converged {ONLINE_WAIT:?} after the pass: {problem} (right after it: {})",
                    first.as_deref().unwrap_or(&problem)
                ));
            }
            first.get_or_insert(problem);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Brings the fleet to `quantity` and checks it, one reconcile every 2 s until it holds
    /// (bounded by [`SETTLE_BOUND`]); returns how many passes that took.
    pub async fn settle(&self, quantity: u32) -> anyhow::Result<u32> {
        let deadline = Instant::now() + SETTLE_BOUND;
        let mut passes = 0;
        loop {
            passes += 1;
            let last = match self.reconcile(Some(quantity)).await {
                Ok(_) => match self.check_fleet(quantity as usize, &BTreeSet::new()).await {
                    Ok(_) => return Ok(passes),
                    Err(e) => e,
                },
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("the fleet does not settle to {quantity} in {SETTLE_BOUND:?}: {last}");
            }
            self.log(&format!(
                "settling to {quantity}, pass {passes}: {}; again in 2 s",
                last.chars().take(300).collect::<String>()
            ));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// After a failed iteration: settles back to `quantity` with manager passes and records how
    /// long that took; when even that fails, records a failure and starts over from nothing.
    async fn recover(&self, tally: &mut Tally) -> anyhow::Result<()> {
        self.ensure(self.quantity, tally).await
    }

    /// Settles to `quantity`; if the manager cannot (within [`SETTLE_BOUND`]), that is a
    /// failure, and the fleet is removed by hand and settled again (an error if that fails too).
    async fn ensure(&self, quantity: u32, tally: &mut Tally) -> anyhow::Result<()> {
        let started = Instant::now();
        match self.settle(quantity).await {
            Ok(passes) => {
                if passes > 1 {
                    tally.add("settles needing more than one pass", 1);
                }
                max_evidence(tally, "settle time (ms, max)", started.elapsed());
                Ok(())
            }
            Err(e) => {
                tally.fail(format!("{e:#}"));
                self.log("hard reset: flush, delete every instance of the run, settle");
                self.run(&["flush", "--json"]).await.ok();
                let left = self.snapshot().await?;
                for name in left.owned.keys().chain(left.unowned.iter()) {
                    self.lxd.force_delete_instance(name).await.ok();
                }
                self.settle(quantity).await.map(|_| ())
            }
        }
    }

    /// Flushes everything and deletes what is left; returns how many instances and
    /// registrations had to be removed by hand (leaks) and how many remain after that.
    pub async fn teardown(&self) -> anyhow::Result<(u64, u64)> {
        let flush = self.run(&["flush", "--json"]).await?;
        if flush.code != Some(0) {
            self.log(&format!("final flush: {:?} {}", flush.code, flush.tail()));
        }
        let left = self.snapshot().await?;
        let leaked = (left.owned.len() + left.unowned.len() + left.registrations.len()) as u64;
        for name in left.owned.keys().chain(left.unowned.iter()) {
            self.log(&format!("leak: deleting instance {name}"));
            self.lxd.force_delete_instance(name).await.ok();
        }
        let after = self.snapshot().await?;
        Ok((leaked, (after.owned.len() + after.unowned.len()) as u64))
    }
}

fn random_app() -> String {
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64 ^ u64::from(std::process::id())),
    );
    let s: String = (0..5)
        .map(|_| char::from(b'a' + (rng.below(26) as u8)))
        .collect();
    format!("chaos{s}")
}

/// The evidence key a failed clean pass counts under: Incus failing to start a container (its
/// `forkstart` pre-start hook timing out) is told apart from the manager's own failures.
fn failure_kind(reason: &str) -> &'static str {
    if reason.contains("forkstart") {
        "failures: Incus could not start a container (forkstart)"
    } else if reason.starts_with("clean reconcile") {
        "failures: the clean pass exited non-zero, other causes"
    } else {
        "failures: the clean pass exited 0 but the fleet was wrong"
    }
}

/// Keeps the larger of the evidence `key` and `value` (milliseconds).
fn max_evidence(tally: &mut Tally, key: &str, value: Duration) {
    let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
    match tally.evidence.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = entry.1.max(ms),
        None => tally.evidence.push((key.to_owned(), ms)),
    }
}

/// Uniform in `[0, max]`.
fn moment(rng: &mut Rng, max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.below(ms.saturating_add(1)))
}

// ------------------------------------------------------------------------------------ R2

/// Where a kill landed, from the snapshot taken right after it.
struct KillView {
    exited_before_kill: bool,
    at_kill: Snapshot,
}

impl World {
    /// Spawns `args`, SIGKILLs it after `after` (unless it already exited) and snapshots.
    async fn kill_after(&self, args: &[&str], after: Duration) -> anyhow::Result<KillView> {
        let mut child = self
            .command(args)
            .spawn()
            .context("spawning runner-manager")?;
        let exited = tokio::time::timeout(after, child.wait()).await;
        let exited_before_kill = match exited {
            Ok(status) => {
                status.context("waiting for runner-manager")?;
                true
            }
            Err(_) => {
                child.start_kill().context("SIGKILL")?;
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .context("the killed process did not exit")??;
                anyhow::ensure!(
                    status.code().is_none(),
                    "exited {status} instead of dying by the signal"
                );
                false
            }
        };
        let at_kill = self.snapshot().await?;
        Ok(KillView {
            exited_before_kill,
            at_kill,
        })
    }

    /// Measures an uninterrupted run of `args` from the current state (must exit 0).
    async fn measure(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let out = self.run(args).await?;
        anyhow::ensure!(
            out.code == Some(0),
            "uninterrupted {args:?} exited {:?}: {}",
            out.code,
            out.tail()
        );
        Ok(out.took)
    }

    /// The clean pass after a kill and the fleet check; `Err` is the failure reason.
    async fn clean_pass(
        &self,
        tally: &mut Tally,
        registered_before: &BTreeSet<String>,
    ) -> Result<(), String> {
        let (_, doc) = self
            .reconcile(None)
            .await
            .map_err(|e| format!("clean reconcile: {e:#}"))?;
        tally.add(
            "clean pass removed",
            doc["removed"].as_u64().unwrap_or_default(),
        );
        tally.add(
            "clean pass created",
            doc["created"].as_u64().unwrap_or_default(),
        );
        let waited = self
            .check_fleet(self.quantity as usize, registered_before)
            .await?;
        if let Some(first) = waited {
            // Not a failure: it converged without another pass. Counted, with the first state.
            self.log(&format!(
                "converged after a wait; right after the pass: {first}"
            ));
            let what = if first.contains("orphans") {
                "clean passes followed by an instance registering on its own"
            } else if first.contains("offline") {
                "clean passes followed by runners coming online"
            } else {
                "clean passes followed by a delete of the killed pass landing"
            };
            tally.add(what, 1);
        }
        Ok(())
    }
}

/// R2a: SIGKILL during creation. Starts cycle through `0..quantity` runners; the kill moment is
/// uniform within the measured duration of the uninterrupted reconcile from that start.
pub async fn r2_create(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R2 kill -9 during create");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0xc4ea7e);
    let q = options.quantity;
    let mut measured: BTreeMap<u32, Duration> = BTreeMap::new();
    for i in 0..options.create_kills {
        if options.out_of_time(&mut tally) {
            break;
        }
        let start = u32::try_from(i % u64::from(q)).unwrap_or(0);
        world.ensure(start, &mut tally).await?;
        let window = match measured.get(&start) {
            Some(d) => *d,
            None => {
                let mut runs = Vec::new();
                for _ in 0..options.measure_runs {
                    world.ensure(start, &mut tally).await?;
                    runs.push(world.measure(&["reconcile", "--json"]).await?);
                    world
                        .check_fleet(q as usize, &BTreeSet::new())
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
                let d = crate::real::median(&runs);
                world.log(&format!(
                    "uninterrupted reconcile {start} -> {q}: {runs:.2?}, median {:.2} s",
                    d.as_secs_f64()
                ));
                tally.add(&format!("window {start}->{q} (ms)"), d.as_millis() as u64);
                measured.insert(start, d);
                world.ensure(start, &mut tally).await?;
                d
            }
        };
        let pre = world.snapshot().await?;
        let before: BTreeSet<String> = pre.owned.keys().cloned().collect();
        let registered_before: BTreeSet<String> = pre.registrations.keys().cloned().collect();
        let at = moment(&mut rng, window);
        let view = world.kill_after(&["reconcile", "--json"], at).await?;
        tally.iterations += 1;
        classify_create_kill(&mut tally, &before, &view);
        world.log(&format!(
            "create kill {}/{} from {start} at {:.2}/{:.2} s: {}",
            i + 1,
            options.create_kills,
            at.as_secs_f64(),
            window.as_secs_f64(),
            view.at_kill.summary()
        ));
        if let Err(reason) = world.clean_pass(&mut tally, &registered_before).await {
            tally.add(failure_kind(&reason), 1);
            tally.fail(format!(
                "create kill {} (from {start}, at {:.2} s of {:.2} s; at kill: {}): {reason}",
                i + 1,
                at.as_secs_f64(),
                window.as_secs_f64(),
                view.at_kill.summary()
            ));
            // The next iteration starts from a known state.
            world.recover(&mut tally).await?;
        }
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
}

fn classify_create_kill(tally: &mut Tally, before: &BTreeSet<String>, view: &KillView) {
    if view.exited_before_kill {
        tally.add("kills after the pass had ended", 1);
        return;
    }
    let snap = &view.at_kill;
    let new: Vec<&String> = snap.owned.keys().filter(|n| !before.contains(*n)).collect();
    let unregistered = new
        .iter()
        .filter(|n| !snap.registrations.contains_key(**n))
        .count();
    let registered_offline = new
        .iter()
        .filter(|n| {
            snap.registrations
                .get(**n)
                .is_some_and(|r| r.status != "online")
        })
        .count();
    if new.is_empty() {
        tally.add("kills before any instance existed", 1);
    }
    if unregistered > 0 {
        tally.add("kills with an instance created, not registered", 1);
    }
    if registered_offline > 0 {
        tally.add("kills with a registration not yet online", 1);
    }
    if !snap.dangling().is_empty() {
        tally.add("kills leaving a dangling registration", 1);
    }
    tally.add(
        "instances created, not registered, at kill",
        unregistered as u64,
    );
}

/// R2b: SIGKILL during `flush` (every third with `--idle-only`) of a full fleet. The kill moment
/// is uniform within the measured duration of the uninterrupted flush of that mode.
pub async fn r2_flush(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R2 kill -9 during flush");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0xf105);
    let q = options.quantity;
    let mut measured: BTreeMap<bool, Duration> = BTreeMap::new();
    for i in 0..options.flush_kills {
        if options.out_of_time(&mut tally) {
            break;
        }
        let idle_only = i % 3 == 1;
        let args: &[&str] = if idle_only {
            &["flush", "--idle-only", "--json"]
        } else {
            &["flush", "--json"]
        };
        world.ensure(q, &mut tally).await?;
        let window = match measured.get(&idle_only) {
            Some(d) => *d,
            None => {
                let mut runs = Vec::new();
                for _ in 0..options.measure_runs {
                    world.ensure(q, &mut tally).await?;
                    runs.push(world.measure(args).await?);
                    let left = world.snapshot().await?;
                    anyhow::ensure!(
                        left.owned.is_empty() && left.registrations.is_empty(),
                        "an uninterrupted flush left {}",
                        left.summary()
                    );
                }
                let d = crate::real::median(&runs);
                world.log(&format!(
                    "uninterrupted {args:?} of {q}: {runs:.2?}, median {:.2} s",
                    d.as_secs_f64()
                ));
                let key = if idle_only { "idle-only" } else { "all" };
                tally.add(&format!("window flush {key} (ms)"), d.as_millis() as u64);
                measured.insert(idle_only, d);
                world.ensure(q, &mut tally).await?;
                d
            }
        };
        let registered_before: BTreeSet<String> =
            world.snapshot().await?.registrations.into_keys().collect();
        let at = moment(&mut rng, window);
        let view = world.kill_after(args, at).await?;
        tally.iterations += 1;
        if idle_only {
            tally.add("flush --idle-only kills", 1);
        }
        classify_flush_kill(&mut tally, q as usize, &view);
        world.log(&format!(
            "flush kill {}/{}{} at {:.2}/{:.2} s: {}",
            i + 1,
            options.flush_kills,
            if idle_only { " (idle-only)" } else { "" },
            at.as_secs_f64(),
            window.as_secs_f64(),
            view.at_kill.summary()
        ));
        if let Err(reason) = world.clean_pass(&mut tally, &registered_before).await {
            tally.add(failure_kind(&reason), 1);
            tally.fail(format!(
                "flush kill {}{} (at {:.2} s of {:.2} s; at kill: {}): {reason}",
                i + 1,
                if idle_only { " idle-only" } else { "" },
                at.as_secs_f64(),
                window.as_secs_f64(),
                view.at_kill.summary()
            ));
            world.recover(&mut tally).await?;
        }
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
}

fn classify_flush_kill(tally: &mut Tally, quantity: usize, view: &KillView) {
    if view.exited_before_kill {
        tally.add("kills after the flush had ended", 1);
        return;
    }
    let snap = &view.at_kill;
    let removed = quantity.saturating_sub(snap.owned.len());
    if removed == 0 && snap.registrations.len() == quantity {
        tally.add("kills before any removal", 1);
    } else if snap.owned.is_empty() && snap.registrations.is_empty() {
        tally.add("kills after every removal", 1);
    } else {
        tally.add("kills mid-flush", 1);
    }
    if !snap.orphans().is_empty() {
        tally.add(
            "kills with a deregistered instance left (orphan at kill)",
            1,
        );
    }
    tally.add("runners removed before the kill", removed as u64);
}

// ------------------------------------------------------------------------------------ R4

/// Incus operations in flight that touch anything but this run's instances.
async fn foreign_operations(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "10",
                "--unix-socket",
                "/var/lib/incus/unix.socket",
                "http://local/1.0/operations?recursion=1",
            ])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .context("curl on the Incus socket timed out")??;
    anyhow::ensure!(
        out.status.success(),
        "listing Incus operations: {}",
        out.status
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut foreign = Vec::new();
    for op in doc["metadata"]["running"].as_array().into_iter().flatten() {
        let instances: Vec<&str> = op["resources"]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let ours = !instances.is_empty()
            && instances
                .iter()
                .all(|i| i.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)));
        if !ours {
            foreign.push(format!(
                "{} {:?}",
                op["description"].as_str().unwrap_or("?"),
                instances
            ));
        }
    }
    Ok(foreign)
}

/// Runs `incus-env.sh <what>` (bounded); its stderr on success.
async fn incus_env(script: &Path, what: &str) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new(script)
            .arg(what)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .with_context(|| format!("incus-env.sh {what} timed out"))??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "incus-env.sh {what}: {}: {stderr}",
        out.status
    );
    Ok(stderr)
}

/// R4: the Incus daemon restarts while a reconcile creates runners (from 0 or 1 runner): once
/// its first new instance shows up, plus a random 0-600 ms. The pass
/// must end on its own, within [`RESTART_PASS_BOUND`], with an exit status (0, or 1 reporting the
/// failed steps), never a panic; then one reconcile must converge. Before each restart the run
/// waits (bounded) until no other Incus operation is in flight, so that other users of the daemon
/// are not hurt; an iteration that never sees a quiet daemon is skipped and counted.
pub async fn r4_restart(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R4 incusd restart during create");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0x4e57a27);
    let q = options.quantity;
    let mut attempts = 0;
    while tally.iterations < options.restarts && attempts < options.restarts * 3 {
        if options.out_of_time(&mut tally) {
            break;
        }
        attempts += 1;
        let start = u32::try_from(attempts % 2).unwrap_or(0).min(q - 1);
        world.ensure(start, &mut tally).await?;
        // Wait for the rest of the daemon to be quiet before starting.
        let quiet_deadline = Instant::now() + Duration::from_secs(120);
        let mut foreign = foreign_operations(&world.prefix()).await?;
        while !foreign.is_empty() && Instant::now() < quiet_deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            foreign = foreign_operations(&world.prefix()).await?;
        }
        if !foreign.is_empty() {
            world.log(&format!(
                "R4: skipping, others' operations in flight: {foreign:?}"
            ));
            tally.add("skipped: other operations in flight", 1);
            continue;
        }
        let pre = world.snapshot().await?;
        let before: BTreeSet<String> = pre.owned.keys().cloned().collect();
        let registered_before: BTreeSet<String> = pre.registrations.keys().cloned().collect();
        let pass_started = Instant::now();
        let mut child = world
            .command(&["reconcile", "--json"])
            .spawn()
            .context("spawning runner-manager")?;
        // Creates are in flight once a new instance shows up; then a random extra 0-3 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut appeared = false;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                break;
            }
            let snap = world.snapshot().await?;
            if snap.owned.keys().any(|n| !before.contains(n)) {
                appeared = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !appeared {
            let out = child.wait_with_output().await?;
            tally.fail(format!(
                "restart {}: the pass created nothing to interrupt (exit {:?}): {}",
                attempts,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            world.ensure(q, &mut tally).await?;
            continue;
        }
        // A moment within the creates (a pass on an idle host takes about a second).
        let extra = moment(&mut rng, Duration::from_millis(600));
        tokio::time::sleep(extra).await;
        let at_restart = world.snapshot().await?;
        if child.try_wait()?.is_some() {
            world.log("R4: the pass ended before the restart moment; again");
            tally.add("attempts where the pass ended first (not counted)", 1);
            world.ensure(q, &mut tally).await?;
            continue;
        }
        let restart_at = pass_started.elapsed();
        let restart_started = Instant::now();
        let log = incus_env(&options.incus_env, "restart").await;
        let restart_took = restart_started.elapsed();
        if let Err(e) = log {
            // Never leave the machine without its daemon.
            let up = incus_env(&options.incus_env, "up").await;
            bail!("restarting incusd failed: {e:#} (up: {up:?})");
        }
        tally.iterations += 1;
        tally.add("restart time (ms, sum)", restart_took.as_millis() as u64);
        let waited = tokio::time::timeout(RESTART_PASS_BOUND, child.wait_with_output()).await;
        let pass_took = pass_started.elapsed();
        let note = format!(
            "restart {} (from {start}, {:.1} s into the pass; at restart: {})",
            tally.iterations,
            restart_at.as_secs_f64(),
            at_restart.summary()
        );
        match waited {
            Err(_) => tally.fail(format!("{note}: the pass hung past {RESTART_PASS_BOUND:?}")),
            Ok(Err(e)) => tally.fail(format!("{note}: waiting for the pass: {e}")),
            Ok(Ok(out)) => {
                let out = Output {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    took: pass_took,
                };
                max_evidence(&mut tally, "pass time (ms, max)", pass_took);
                let failed = out.json().and_then(|d| d["failed"].as_u64());
                match (out.code, failed) {
                    _ if out.panicked() => {
                        tally.fail(format!("{note}: the pass panicked: {}", out.tail()))
                    }
                    (Some(1), Some(n)) if n > 0 => {
                        tally.add("pass exit 1, failed steps reported", 1)
                    }
                    (Some(1), None) => tally.add("pass exit 1, pass aborted with an error", 1),
                    (Some(0), Some(0)) => tally.add("pass exit 0 (rode out the restart)", 1),
                    (code, failed) => tally.fail(format!(
                        "{note}: exit {code:?} with failed {failed:?}: {}",
                        out.tail()
                    )),
                }
                world.log(&format!(
                    "{note}: pass exit {:?} after {:.1} s, restart took {:.1} s",
                    out.code,
                    pass_took.as_secs_f64(),
                    restart_took.as_secs_f64()
                ));
            }
        }
        // Did the containers survive the restart?
        let after = world.snapshot().await?;
        let survived = at_restart
            .owned
            .keys()
            .filter(|n| after.owned.get(*n).is_some_and(|s| s == "Running"))
            .count();
        tally.add("instances at restart", at_restart.owned.len() as u64);
        tally.add("of them still running after the pass", survived as u64);
        if let Err(reason) = world.clean_pass(&mut tally, &registered_before).await {
            tally.fail(format!("{note}: next reconcile: {reason}"));
            world.recover(&mut tally).await?;
        }
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
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
        leak.fail(format!(
            "{remaining} instance(s) remain under {}",
            world.prefix()
        ));
    }
    tallies.push(leak);
    Ok(tallies)
}

#[cfg(test)]
mod tests {
    use super::failure_kind;

    #[test]
    fn failures_are_told_apart_by_cause() {
        let incus = "clean reconcile: reconcile exited Some(1) ({}): creating instance x failed: \
                     Failed to run: /usr/libexec/incus/incusd forkstart x /var/lib/incus/containers";
        assert!(failure_kind(incus).contains("forkstart"));
        let other = "clean reconcile: reconcile exited Some(1) ({}): listing runners: 502";
        assert!(failure_kind(other).contains("other causes"));
        let fleet = "not converged 30s after the pass: expected 3: 0 owned instances";
        assert!(failure_kind(fleet).contains("exited 0"));
    }
}
