//! The world of the Incus checks: the simulator, the binary, both sides read directly.

use super::*;

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
    pub(super) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// The last warning or error lines of stderr, shortened (for a failure note).
    pub(super) fn tail(&self) -> String {
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

    pub(super) fn panicked(&self) -> bool {
        self.code == Some(101) || self.stderr.contains("panicked at")
    }
}

/// Both sides as the checks see them (this run's prefix only).
/// The keys of `map` that `other` does not have.
fn keys_not_in<'a, V, W>(
    map: &'a BTreeMap<String, V>,
    other: &BTreeMap<String, W>,
) -> Vec<&'a str> {
    map.keys()
        .filter(|n| !other.contains_key(*n))
        .map(String::as_str)
        .collect()
}

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Owned instances (prefix, name form and config keys) → status.
    pub owned: BTreeMap<String, String>,
    /// Instances under the prefix that are not owned (missing keys): never expected.
    pub unowned: Vec<String>,
    pub registrations: BTreeMap<String, RunnerView>,
}

impl Snapshot {
    /// Owned instances with no registration.
    pub fn orphans(&self) -> Vec<&str> {
        keys_not_in(&self.owned, &self.registrations)
    }

    /// Registrations with no owned instance.
    pub fn dangling(&self) -> Vec<&str> {
        keys_not_in(&self.registrations, &self.owned)
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
    pub(super) quantity: u32,
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
        let lxd =
            crate::real::connect_incus(Duration::from_secs(60), Duration::from_secs(180)).await?;
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

    pub(super) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command: tokio::process::Command =
            test_support::config::binary_command(&self.binary, &self.config, args).into();
        command
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
    pub(super) async fn recover(&self, tally: &mut Tally) -> anyhow::Result<()> {
        self.ensure(self.quantity, tally).await
    }

    /// Settles to `quantity`; if the manager cannot (within [`SETTLE_BOUND`]), that is a
    /// failure, and the fleet is removed by hand and settled again (an error if that fails too).
    pub(super) async fn ensure(&self, quantity: u32, tally: &mut Tally) -> anyhow::Result<()> {
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
                tally.fail_and_print(format!("{e:#}"));
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
pub(super) fn failure_kind(reason: &str) -> &'static str {
    if reason.contains("forkstart") {
        "failures: Incus could not start a container (forkstart)"
    } else if reason.starts_with("clean reconcile") {
        "failures: the clean pass exited non-zero, other causes"
    } else {
        "failures: the clean pass exited 0 but the fleet was wrong"
    }
}

/// Keeps the larger of the evidence `key` and `value` (milliseconds).
pub(super) fn max_evidence(tally: &mut Tally, key: &str, value: Duration) {
    let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
    crate::table::fold_count(&mut tally.evidence, key, ms, u64::max);
}

/// Uniform in `[0, max]`.
pub(super) fn moment(rng: &mut Rng, max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.below(ms.saturating_add(1)))
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
