//! Reliability suite, R1 (busy runners) and R3 (GitHub faults), against github-sim with the
//! SIMULATION instance provider (`manager::sim_provider`). The checks are about the manager's
//! decisions against GitHub, so the provider may be simulated; crash and LXD checks are not here.
//!
//! - R1: a job is assigned at a random moment between observe and act (the sim's one-shot
//!   assign-on-delete hook, a job queued just before the pass, and/or a job queued from another
//!   task at a random delay into the pass); the pass scales down or runs `flush(IdleOnly)`.
//!   A *killed* job is one whose runner's instance was deleted while the job was assigned to it,
//!   or one that ended `failure`/`cancelled`.
//! - R1-lie ([`r1_busy_lie`]): R1 with the sim's busy-lie fault armed (`POST
//!   /_sim/faults/busy-lie`): GitHub reports runners that run a job as idle and lets their
//!   `DELETE` through, as operators of other managers have seen. Only a look inside the instance
//!   can then save the job; the sim counts the jobs killed by deletion.
//! - R3: fault storms on the REST endpoints the manager uses (5xx bursts, 403/429 with
//!   `retry-after`, timeouts, dropped connections) during N passes, with runners finishing jobs,
//!   busy and dying around them. Checked: no healthy or busy runner deleted, instances never above
//!   the quantity, bounded retries and `retry-after` honoured, and one pass converges afterwards.
//!
//! Every check ends with a full drain (jobs completed, `reconcile(0)`); whatever instance or
//! registration remains is a *leak*.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use github_sim::{BusyLieSpec, BusyLieStatus, FaultSpec, JobStatus, JobView, RunnerView};
use manager::adapters::GithubRegistry;
use manager::events::Metrics;
use manager::sim_provider::{SimLatency, SimProvider, SimRunnerHooks};
use manager::{
    Backends, FlushMode, GitHubPath, ManagerConfig, ProxySettings, RegistrationMode, Resources,
    RunnerManager,
};
use parking_lot::Mutex;

use crate::agents::SimAgents;
use crate::fleet::REPO;
use crate::outside::Outside;

/// REST endpoint keys as the sim counts them.
pub const LIST: &str = "GET /repos/{owner}/{repo}/actions/runners";
pub const DELETE: &str = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}";
pub const REG_TOKEN: &str = "POST /repos/{owner}/{repo}/actions/runners/registration-token";
pub const JIT: &str = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig";

/// Client settings of the suite: GitHub's rules, with shorter constants so a storm takes seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Latency of a "timeout" fault (longer than [`CLIENT_TIMEOUT`]).
pub const TIMEOUT_FAULT_MS: u64 = 2_500;
pub const MAX_RETRIES: usize = 3;

/// A small deterministic PRNG (xorshift64*); the seed is printed so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let i = usize::try_from(self.below(items.len() as u64)).ok()?;
        items.get(i)
    }
}

/// The counts one check prints.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub check: String,
    pub iterations: u64,
    pub failures: u64,
    pub leaks: u64,
    /// Further named counts (evidence that the race or fault was exercised).
    pub details: Vec<(String, u64)>,
    /// Human-readable failure descriptions (first few).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Counts {
    fn new(check: &str) -> Self {
        Self {
            check: check.to_owned(),
            ..Self::default()
        }
    }

    fn add(&mut self, key: &str, n: u64) {
        match self.details.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v += n,
            None => self.details.push((key.to_owned(), n)),
        }
    }

    pub fn detail(&self, key: &str) -> u64 {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, v)| *v)
    }

    fn fail(&mut self, note: String) {
        self.failures += 1;
        if self.notes.len() < 20 {
            self.notes.push(note);
        }
    }

    /// Merges `other` (same check, another mode) into `self`.
    pub fn merge(&mut self, other: Counts) {
        self.iterations += other.iterations;
        self.failures += other.failures;
        self.leaks += other.leaks;
        self.elapsed += other.elapsed;
        for (k, v) in other.details {
            self.add(&k, v);
        }
        self.notes.extend(other.notes);
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: iterations {}, failures {}, leaks {} ({:.1} s)\n",
            self.check,
            self.iterations,
            self.failures,
            self.leaks,
            self.elapsed.as_secs_f64()
        );
        for (k, v) in &self.details {
            out.push_str(&format!("    {k}: {v}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("    FAILURE: {n}\n"));
        }
        out
    }
}

// ---------------------------------------------------------------- agents

/// Simulated runner agents ([`SimAgents`]) that can also register late, after the manager observed
/// the instance (see [`ChaosAgents::register_late`]).
pub struct ChaosAgents {
    agents: SimAgents,
    /// Runners that register late: `true` once deleted.
    late: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    /// The sim's truth about jobs (what a real instance's hook records would show).
    admin: Admin,
}

impl ChaosAgents {
    pub fn new(outside: Arc<Outside>) -> anyhow::Result<Self> {
        Ok(Self {
            admin: Admin::new(&outside)?,
            agents: SimAgents::new(outside, REPO)?,
            late: Mutex::default(),
        })
    }

    /// `config.sh` and `run.sh` of an instance that was already there (a pass interrupted
    /// mid-create, or another process creating), then a job only it can take. Atomic with respect
    /// to the instance's deletion: if the instance is deleted first, nothing happens and `false`
    /// is returned; a deletion that comes later happens to a registered runner holding a job.
    pub async fn register_late(
        &self,
        admin: &Admin,
        name: &str,
        labels: &str,
        job_label: &str,
        token: &str,
    ) -> anyhow::Result<bool> {
        let gate = self.late.lock().entry(name.to_owned()).or_default().clone();
        let deleted = gate.lock().await;
        if *deleted {
            return Ok(false);
        }
        self.agents.register(name, labels, token).await?;
        self.agents.run(name, None).await?;
        admin.enqueue(job_label).await?;
        Ok(true)
    }

    pub fn credential(&self, name: &str) -> Option<String> {
        self.agents.credential(name)
    }
}

#[async_trait]
impl SimRunnerHooks for ChaosAgents {
    async fn configure(&self, name: &str, labels: &str, token: &str) -> bool {
        self.agents.register(name, labels, token).await.is_ok()
    }

    async fn start(&self, name: &str, jit: Option<&str>) -> bool {
        self.agents.run(name, jit).await.is_ok()
    }

    async fn stop(&self, name: &str) {
        let gate = self.late.lock().get(name).cloned();
        let _deleted = match &gate {
            Some(gate) => {
                let mut deleted = gate.lock().await;
                *deleted = true;
                Some(deleted)
            }
            None => None,
        };
        self.agents.stop_agent(name).await;
    }

    /// What a real instance's hook records show: the job the runner picked up and has not
    /// completed. A job only assigned is not running (not acquired yet). When the sim cannot be
    /// asked, a job is assumed, as an unanswered look inside keeps the runner too.
    async fn job_running(&self, name: &str) -> bool {
        let held = async {
            let runners = self.admin.runners().await?;
            let Some(job_id) = runners
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.job_id)
            else {
                return Ok::<_, anyhow::Error>(false);
            };
            Ok(self.admin.job(job_id).await?.status == JobStatus::InProgress)
        };
        held.await.unwrap_or(true)
    }

    /// `guest/quiesce.sh`: freezes the runner (the sim then hands it no job), then looks for a
    /// running job; with one, thaws it and answers busy. Freezing first models the script's
    /// check and `kill -STOP` being one process inside the instance, with no job message
    /// acquired in between.
    async fn quiesce(&self, name: &str) -> bool {
        if self.admin.freeze(name, true).await.is_err() {
            return false;
        }
        if self.job_running(name).await {
            let _ = self.admin.freeze(name, false).await;
            return false;
        }
        true
    }

    async fn resume(&self, name: &str) {
        let _ = self.admin.freeze(name, false).await;
    }
}

// ---------------------------------------------------------------- sim admin

/// The sim's admin API (`/_sim/…`) and the runner's job completion.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub fn new(outside: &Outside) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
            base: outside.base_url().to_owned(),
        })
    }

    /// Lifts the sim's primary rate limit (the suite makes far more than 5,000 calls an hour).
    pub async fn lift_rate_limit(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/rate-limit", self.base))
            .json(&serde_json::json!({ "limit": 100_000_000u32, "used": 0 }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn enqueue(&self, label: &str) -> anyhow::Result<u64> {
        let body = serde_json::json!({ "labels": [label], "script": "true" });
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/_sim/jobs", self.base))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer["job_id"].as_u64().context("enqueue answer")
    }

    pub async fn jobs(&self) -> anyhow::Result<Vec<JobView>> {
        Ok(self
            .http
            .get(format!("{}/_sim/jobs", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Freezes or thaws a runner (`POST /_sim/runners/freeze`).
    pub async fn freeze(&self, name: &str, frozen: bool) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/runners/freeze", self.base))
            .json(&serde_json::json!({ "name": name, "frozen": frozen }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn job(&self, id: u64) -> anyhow::Result<JobView> {
        Ok(self
            .http
            .get(format!("{}/_sim/jobs/{id}", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn runners(&self) -> anyhow::Result<Vec<RunnerView>> {
        Ok(self
            .http
            .get(format!("{}/_sim/runners", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn assign_on_delete(
        &self,
        runner: Option<&str>,
        enabled: bool,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({ "runner_name": runner, "enabled": enabled });
        self.http
            .post(format!("{}/_sim/hooks/assign-on-delete", self.base))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn fault(&self, spec: &FaultSpec) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/faults", self.base))
            .json(spec)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Arms the busy-lie fault (`POST /_sim/faults/busy-lie`).
    pub async fn busy_lie(&self, spec: &BusyLieSpec) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/faults/busy-lie", self.base))
            .json(spec)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The busy-lie fault and its counters (`jobs_killed_by_deletion`, …).
    pub async fn busy_lie_status(&self) -> anyhow::Result<BusyLieStatus> {
        Ok(self
            .http
            .get(format!("{}/_sim/faults/busy-lie", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Clears every fault, the busy-lie fault included.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/faults", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `POST /_runner/jobs/{id}/complete` as the runner holding it.
    pub async fn complete(&self, job_id: u64, credential: &str) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_runner/jobs/{job_id}/complete", self.base))
            .header("authorization", format!("Bearer {credential}"))
            .json(&serde_json::json!({ "exit_code": 0, "output": "ok" }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- fleet

/// A manager over the SIMULATION provider with [`ChaosAgents`], and a GitHub client with the
/// suite's shorter timeout and backoff constants.
pub struct ChaosFleet {
    pub manager: RunnerManager,
    pub provider: Arc<SimProvider>,
    pub agents: Arc<ChaosAgents>,
    pub client: github::Client,
    pub resources: Resources,
    pub label: String,
    _state: tempfile::TempDir,
}

impl ChaosFleet {
    pub async fn new(
        outside: &Arc<Outside>,
        app: &str,
        mode: RegistrationMode,
    ) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let agents = Arc::new(ChaosAgents::new(outside.clone())?);
        let provider = Arc::new(SimProvider::new(
            SimLatency {
                create: Duration::ZERO,
                exec: Duration::from_micros(200),
                delete: Duration::from_micros(500),
            },
            Some(agents.clone() as Arc<dyn SimRunnerHooks>),
        ));
        let mut client_config = github::ClientConfig::new(
            url::Url::parse(&outside.api_url())?,
            url::Url::parse(outside.base_url())?,
            github::Scope::parse(REPO)?,
            github::Auth::Token(github::Secret::new(github_sim::DEFAULT_TOKEN)),
        );
        client_config.timeout = CLIENT_TIMEOUT;
        client_config.retry = github::RetryPolicy {
            max_retries: MAX_RETRIES,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        };
        client_config.max_rate_limit_wait = Duration::from_secs(5);
        let client = github::Client::new(client_config)?;
        let mut prometheus = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut prometheus);
        let mut config = ManagerConfig::new(
            GitHubPath::parse(REPO, "")?,
            outside.base_url(),
            "jammy",
            state.path(),
        );
        config.registration_mode = mode;
        config.create_concurrency = 4;
        config.busy_stop_timeout = Duration::from_secs(5);
        let backends = Backends {
            provider: provider.clone(),
            registry: Arc::new(GithubRegistry::new(
                client.clone(),
                None,
                Some(metrics.clone()),
            )),
            metrics,
        };
        let manager = RunnerManager::new(app, 0, config, &ProxySettings::default(), backends)?;
        let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
        manager.update_runner_bin(&download).await?;
        Ok(Self {
            manager,
            provider,
            agents,
            client,
            resources: Resources::new(2, "7GiB", "10GiB")?,
            label: app.to_owned(),
            _state: state,
        })
    }

    fn owns(&self, name: &str) -> bool {
        self.manager.owner().parse_name(name).is_some()
    }

    /// This fleet's registrations in the sim.
    pub async fn registrations(&self, admin: &Admin) -> anyhow::Result<Vec<RunnerView>> {
        Ok(admin
            .runners()
            .await?
            .into_iter()
            .filter(|r| self.owns(&r.name))
            .collect())
    }

    /// Completes every unfinished job held by one of this fleet's runners, as the runner would,
    /// and ends the runner process (ephemeral). Returns how many were completed.
    pub async fn complete_jobs(&self, admin: &Admin) -> anyhow::Result<usize> {
        let mut done = 0;
        for job in admin.jobs().await? {
            if job.status == JobStatus::Completed {
                continue;
            }
            let Some(runner) = job.runner_name.as_deref().filter(|r| self.owns(r)) else {
                continue;
            };
            if let Some(credential) = self.agents.credential(runner) {
                if admin.complete(job.job_id, &credential).await.is_ok() {
                    done += 1;
                }
            }
            self.provider.finish_runner(runner);
        }
        Ok(done)
    }

    /// Brings the fleet to `quantity` online idle runners and no unfinished job of its label.
    /// JIT pacing (70 registrations a minute) can hold creations back: up to 90 s.
    pub async fn settle(&self, admin: &Admin, quantity: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            self.complete_jobs(admin).await?;
            let report = self.manager.reconcile(quantity, &self.resources).await?;
            let changed = !report.created.is_empty() || !report.removed.is_empty();
            if changed || !report.failed.is_empty() {
                continue;
            }
            let open = admin.jobs().await?.into_iter().any(|j| {
                j.status != JobStatus::Completed
                    && (j.labels.contains(&self.label)
                        || j.runner_name.as_deref().is_some_and(|r| self.owns(r)))
            });
            let regs = self.registrations(admin).await?;
            let good = regs
                .iter()
                .filter(|r| r.status == "online" && !r.busy)
                .count();
            if !open && regs.len() == quantity && good == quantity {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let regs: Vec<String> = self
            .registrations(admin)
            .await?
            .iter()
            .map(|r| format!("{} {} busy={} job={:?}", r.name, r.status, r.busy, r.job_id))
            .collect();
        let jobs: Vec<String> = admin
            .jobs()
            .await?
            .iter()
            .filter(|j| j.status != JobStatus::Completed)
            .map(|j| {
                format!(
                    "{} {:?} {:?} on {:?}",
                    j.job_id, j.status, j.labels, j.runner_name
                )
            })
            .collect();
        anyhow::bail!(
            "the fleet did not settle at {quantity}: registrations {regs:?}, instances {:?}, open jobs {jobs:?}",
            self.provider.instance_names()
        )
    }

    /// Drains the fleet (jobs completed, `reconcile(0)`) and returns the instances and
    /// registrations left behind.
    pub async fn drain_leaks(&self, admin: &Admin) -> anyhow::Result<u64> {
        admin.clear_faults().await?;
        admin.assign_on_delete(None, false).await?;
        for _ in 0..5 {
            self.complete_jobs(admin).await?;
            let _ = self.manager.reconcile(0, &self.resources).await;
        }
        let instances = self.provider.instance_names().len() as u64;
        let registrations = self.registrations(admin).await?.len() as u64;
        Ok(instances + registrations)
    }
}

/// Jobs whose runner's instance is gone while the job was still assigned, and jobs that ended
/// failed or cancelled. `counted` keeps each job from being counted twice.
async fn killed_jobs(
    fleet: &ChaosFleet,
    admin: &Admin,
    counted: &mut BTreeSet<u64>,
) -> anyhow::Result<Vec<String>> {
    let mut killed = Vec::new();
    for job in admin.jobs().await? {
        if counted.contains(&job.job_id) {
            continue;
        }
        let Some(runner) = job.runner_name.as_deref().filter(|r| fleet.owns(r)) else {
            continue;
        };
        let bad_end = job.status == JobStatus::Completed
            && matches!(job.conclusion.as_deref(), Some("failure" | "cancelled"));
        let orphaned =
            job.status != JobStatus::Completed && fleet.provider.instance(runner).is_none();
        if bad_end || orphaned {
            counted.insert(job.job_id);
            killed.push(format!(
                "job {} on {runner}: status {:?}, conclusion {:?}, instance {}{}",
                job.job_id,
                job.status,
                job.conclusion,
                if orphaned { "deleted" } else { "present" },
                if job.killed_by_deletion {
                    ", killed by the DELETE of its busy runner (busy-lie fault)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(killed)
}

// ---------------------------------------------------------------- R1

/// R1: randomized races between observe and act, `token` iterations in token mode and `jit` in
/// JIT mode (JIT is slower: the manager paces JIT registrations to 70 a minute).
/// With `booting_race` (R1b), each iteration also has an owned instance with no registration yet
/// (an interrupted or concurrent creation) that registers and takes a job during the pass.
pub async fn r1(
    outside: &Arc<Outside>,
    token: u64,
    jit: u64,
    seed: u64,
    booting_race: bool,
) -> anyhow::Result<Counts> {
    let mut total = Counts::new(if booting_race {
        "R1b busy runners, booting instance registers mid-pass"
    } else {
        "R1 busy runners"
    });
    let detected = detector_control(outside, booting_race).await?;
    total.add(
        "detector control: kills seen when an instance is deleted under a job (expect 1)",
        detected,
    );
    if detected != 1 {
        total.fail(format!(
            "the kill detector saw {detected} kills in its control, not 1"
        ));
    }
    let apps = if booting_race {
        ["r1btok", "r1bjit"]
    } else {
        ["r1tok", "r1jit"]
    };
    for (mode, app, n, salt) in [
        (RegistrationMode::Token, apps[0], token, 0x1111),
        (RegistrationMode::Jit, apps[1], jit, 0x2222),
    ] {
        total.merge(r1_mode(outside, mode, app, n, seed ^ salt, booting_race, None).await?);
    }
    Ok(total)
}

/// R1-lie: R1 (`token` iterations in token mode, `jit` in JIT mode) with the sim's busy-lie fault
/// armed for `rate` (0..=1) of the jobs: GitHub's list says `busy: false` for a runner that runs
/// a job, and its `DELETE` answers 204 and kills the job. The manager's GitHub-side checks cannot
/// see the job; only a look inside the instance can. Every job killed is a failure; the detail
/// "jobs killed by deletion (sim counter)" is read from `GET /_sim/faults/busy-lie`.
pub async fn r1_busy_lie(
    outside: &Arc<Outside>,
    token: u64,
    jit: u64,
    seed: u64,
    rate: f64,
) -> anyhow::Result<Counts> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&rate),
        "busy-lie rate {rate} is not within 0..=1"
    );
    let mut total = Counts::new(&format!(
        "R1-lie busy runners, GitHub's busy flag lies for {:.0}% of jobs",
        rate * 100.0
    ));
    let detected = busy_lie_control(outside).await?;
    total.add(
        "detector control: kills counted when a busy runner is deleted through the lie (expect 1)",
        detected,
    );
    if detected != 1 {
        total.fail(format!(
            "the busy-lie kill counter saw {detected} kills in its control, not 1"
        ));
    }
    for (mode, app, n, salt) in [
        (RegistrationMode::Token, "r1ltok", token, 0x3333),
        (RegistrationMode::Jit, "r1ljit", jit, 0x4444),
    ] {
        total.merge(r1_mode(outside, mode, app, n, seed ^ salt, false, Some(rate)).await?);
    }
    Ok(total)
}

/// Control of the busy-lie counter: one `DELETE` of a runner running a job, straight through the
/// GitHub client while the lie is armed, must be counted as exactly one job killed by deletion,
/// by the sim and by [`killed_jobs`].
async fn busy_lie_control(outside: &Arc<Outside>) -> anyhow::Result<u64> {
    let admin = Admin::new(outside)?;
    let fleet = ChaosFleet::new(outside, "r1lcontrol", RegistrationMode::Token).await?;
    fleet.settle(&admin, 2).await?;
    let before = admin.busy_lie_status().await?.jobs_killed_by_deletion;
    let job = admin.enqueue(&fleet.label).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let runner_id = loop {
        let view = admin.jobs().await?.into_iter().find(|j| j.job_id == job);
        if let Some(j) = view.filter(|j| j.status == JobStatus::InProgress) {
            break j.runner_id.context("a running job without a runner")?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the control job was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    admin.busy_lie(&BusyLieSpec::all()).await?;
    let listed = fleet.client.get_runner(github::RunnerId(runner_id)).await?;
    anyhow::ensure!(!listed.busy, "the armed lie still reports the runner busy");
    fleet
        .client
        .delete_runner(github::RunnerId(runner_id))
        .await?;
    admin.clear_faults().await?;
    let counted = admin.busy_lie_status().await?.jobs_killed_by_deletion - before;
    let mut seen = BTreeSet::new();
    let detected = killed_jobs(&fleet, &admin, &mut seen).await?.len() as u64;
    fleet.drain_leaks(&admin).await?;
    anyhow::ensure!(
        counted == detected,
        "the sim counted {counted} kills by deletion, the job views show {detected}"
    );
    Ok(counted)
}

/// Negative control: deleting the instance of a runner that holds a job (what a buggy manager
/// would do) must be counted as exactly one killed job.
async fn detector_control(outside: &Arc<Outside>, second: bool) -> anyhow::Result<u64> {
    use manager::provider::InstanceProvider;
    let admin = Admin::new(outside)?;
    let app = if second { "r1bcontrol" } else { "r1control" };
    let fleet = ChaosFleet::new(outside, app, RegistrationMode::Token).await?;
    fleet.settle(&admin, 2).await?;
    let job = admin.enqueue(&fleet.label).await?;
    let runner = admin
        .jobs()
        .await?
        .into_iter()
        .find(|j| j.job_id == job)
        .and_then(|j| j.runner_name)
        .context("the control job was not assigned")?;
    fleet.provider.delete(&runner).await?;
    let mut counted = BTreeSet::new();
    let killed = killed_jobs(&fleet, &admin, &mut counted).await?.len() as u64;
    fleet.drain_leaks(&admin).await?;
    Ok(killed)
}

async fn r1_mode(
    outside: &Arc<Outside>,
    mode: RegistrationMode,
    app: &str,
    iterations: u64,
    seed: u64,
    booting_race: bool,
    busy_lie: Option<f64>,
) -> anyhow::Result<Counts> {
    let started = Instant::now();
    let mut counts = Counts::new("R1");
    let admin = Admin::new(outside)?;
    admin.lift_rate_limit().await?;
    let fleet = ChaosFleet::new(outside, app, mode).await?;
    let lie_before = match busy_lie {
        Some(rate) => {
            let before = admin.busy_lie_status().await?;
            admin
                .busy_lie(&BusyLieSpec {
                    rate: Some(rate),
                    count: None,
                    seed: Some(seed),
                })
                .await?;
            Some(before)
        }
        None => None,
    };
    let mut rng = Rng::new(seed);
    let mut counted = BTreeSet::new();
    let mut pass_us: u64 = 5_000;
    for i in 0..iterations {
        let quantity = 2 + rng.below(4) as usize;
        fleet
            .settle(&admin, quantity)
            .await
            .with_context(|| format!("R1 iteration {i}: settling"))?;
        let idle: Vec<String> = fleet
            .registrations(&admin)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();

        // The races.
        if rng.chance(0.6) {
            let target = if rng.chance(0.7) {
                rng.pick(&idle).cloned()
            } else {
                None
            };
            admin.assign_on_delete(target.as_deref(), true).await?;
            counts.add("assign-on-delete hooks armed", 1);
        }
        if rng.chance(0.3) {
            for _ in 0..=rng.below(2) {
                admin.enqueue(&fleet.label).await?;
                counts.add("jobs queued just before the pass", 1);
            }
        }
        // An owned instance that has no registration yet (booting) registers and takes a job at a
        // random moment during the pass.
        let late = booting_race.then(|| {
            let name = fleet.manager.owner().new_runner_name().to_string();
            fleet
                .provider
                .add_booting_instance(&name, fleet.manager.owner().config_keys());
            name
        });
        let late_task = match late {
            Some(name) => {
                counts.add("booting instances registering during the pass", 1);
                let token = fleet.client.create_registration_token().await?.token;
                let delay = Duration::from_micros(rng.below(pass_us.max(1)));
                let (agents, admin) = (fleet.agents.clone(), admin.clone());
                let labels = format!("{},late{i}", fleet.label);
                Some(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let job_label = labels.rsplit(',').next().unwrap_or_default().to_owned();
                    agents
                        .register_late(&admin, &name, &labels, &job_label, token.expose())
                        .await
                }))
            }
            None => None,
        };
        let during = rng.chance(0.6).then(|| {
            let delay = Duration::from_micros(rng.below(pass_us.max(1)));
            let admin = admin.clone();
            let label = fleet.label.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                admin.enqueue(&label).await
            })
        });
        let scale_down = rng.chance(0.65);
        let target = rng.below(quantity as u64) as usize;
        let before = Instant::now();
        let skipped = if scale_down {
            counts.add("reconcile scale-downs", 1);
            let report = fleet.manager.reconcile(target, &fleet.resources).await?;
            report.skipped_busy.len()
        } else {
            counts.add("flush(IdleOnly)", 1);
            let report = fleet.manager.flush(FlushMode::IdleOnly).await?;
            report.skipped_busy.len()
        };
        let took = u64::try_from(before.elapsed().as_micros()).unwrap_or(u64::MAX);
        pass_us = (pass_us * 7 + took) / 8;
        counts.add("removals skipped because GitHub said busy", skipped as u64);
        if let Some(task) = during {
            task.await??;
            counts.add("jobs queued at a random moment during the pass", 1);
        }
        if let Some(task) = late_task {
            if task.await?? {
                counts.add("late registrations that got a job", 1);
            }
        }
        admin.assign_on_delete(None, false).await?;
        for note in killed_jobs(&fleet, &admin, &mut counted).await? {
            counts.add("busy jobs killed", 1);
            counts.fail(format!("iteration {i}: {note}"));
        }
        let busy = fleet
            .registrations(&admin)
            .await?
            .iter()
            .filter(|r| r.busy)
            .count();
        counts.add("runners busy right after the pass (race hit)", busy as u64);
        if busy_lie.is_some() {
            // The measurement is void if anything disarmed the lie (`DELETE /_sim/faults` does).
            let status = admin.busy_lie_status().await?;
            anyhow::ensure!(
                status.fault.is_some(),
                "iteration {i}: the busy-lie fault was disarmed"
            );
        }
        counts.iterations += 1;
        if counts.iterations.is_multiple_of(100) {
            eprintln!("  {app}: {} iterations", counts.iterations);
        }
    }
    if let Some(before) = lie_before {
        // Read before the drain, which disarms the lie (the drain must not kill anything).
        let after = admin.busy_lie_status().await?;
        counts.add(
            "jobs killed by deletion (sim counter)",
            after.jobs_killed_by_deletion - before.jobs_killed_by_deletion,
        );
        counts.add(
            "busy runners deleted through the lie (sim counter)",
            after.busy_runners_deleted - before.busy_runners_deleted,
        );
        counts.add(
            "assigned jobs requeued by such a deletion (not killed)",
            after.jobs_requeued_by_deletion - before.jobs_requeued_by_deletion,
        );
    }
    counts.leaks += fleet.drain_leaks(&admin).await?;
    for note in killed_jobs(&fleet, &admin, &mut counted).await? {
        counts.add("busy jobs killed", 1);
        counts.fail(format!("after drain: {note}"));
    }
    counts.add("busy jobs killed", 0);
    counts.elapsed = started.elapsed();
    Ok(counts)
}

// ---------------------------------------------------------------- R3

/// The fault storms of R3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storm {
    ServerError,
    Forbidden403RetryAfter,
    TooMany429RetryAfter,
    Timeout,
    Drop,
    Flaky,
}

impl Storm {
    const ALL: [Storm; 6] = [
        Storm::ServerError,
        Storm::Forbidden403RetryAfter,
        Storm::TooMany429RetryAfter,
        Storm::Timeout,
        Storm::Drop,
        Storm::Flaky,
    ];

    fn name(self) -> &'static str {
        match self {
            Storm::ServerError => "5xx bursts",
            Storm::Forbidden403RetryAfter => "403 + retry-after",
            Storm::TooMany429RetryAfter => "429 + retry-after",
            Storm::Timeout => "timeouts",
            Storm::Drop => "dropped connections",
            Storm::Flaky => "50% 502 for 6 calls",
        }
    }

    fn spec(self, endpoint: &str, rng: &mut Rng) -> FaultSpec {
        let count = |rng: &mut Rng, max: u64| Some(1 + rng.below(max) as u32);
        let base = FaultSpec {
            endpoint: endpoint.to_owned(),
            ..FaultSpec::default()
        };
        match self {
            Storm::ServerError => FaultSpec {
                status: rng.pick(&[500u16, 502, 503, 504]).copied(),
                count: count(rng, 8),
                ..base
            },
            Storm::Forbidden403RetryAfter => FaultSpec {
                status: Some(403),
                retry_after: Some(1),
                message: Some("You have exceeded a secondary rate limit.".to_owned()),
                count: count(rng, 2),
                ..base
            },
            Storm::TooMany429RetryAfter => FaultSpec {
                status: Some(429),
                retry_after: Some(1),
                count: count(rng, 2),
                ..base
            },
            Storm::Timeout => FaultSpec {
                latency_ms: Some(TIMEOUT_FAULT_MS),
                count: count(rng, 2),
                ..base
            },
            Storm::Drop => FaultSpec {
                drop: true,
                count: count(rng, 5),
                ..base
            },
            Storm::Flaky => FaultSpec {
                status: Some(502),
                rate: Some(0.5),
                count: Some(6),
                ..base
            },
        }
    }
}

/// R3: `passes` storm passes (half token mode, half JIT) plus the deterministic backoff probes.
pub async fn r3(outside: &Arc<Outside>, passes: u64, seed: u64) -> anyhow::Result<Counts> {
    let mut total = Counts::new("R3 GitHub faults");
    let half = passes / 2;
    for (mode, app, n) in [
        (RegistrationMode::Token, "r3tok", half),
        (RegistrationMode::Jit, "r3jit", passes - half),
    ] {
        total.merge(r3_mode(outside, mode, app, n, seed ^ (n << 1)).await?);
    }
    Ok(total)
}

async fn list_requests(outside: &Outside) -> anyhow::Result<u64> {
    Ok(outside
        .request_counts()
        .await?
        .get(LIST)
        .map_or(0, |c| c.count))
}

/// GitHub's rules on a steady fleet, one fault at a time: `retry-after` is waited out, 5xx are
/// retried a bounded number of times, a plain 403 is not retried.
async fn backoff_probes(
    outside: &Outside,
    admin: &Admin,
    fleet: &ChaosFleet,
    quantity: usize,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    struct Probe {
        what: &'static str,
        spec: FaultSpec,
        ok: bool,
        requests: std::ops::RangeInclusive<u64>,
        min_elapsed: Duration,
    }
    let probes = [
        Probe {
            what: "429 retry-after 2 on list: waits >= 2 s, 1 retry, pass ok",
            spec: FaultSpec {
                retry_after: Some(2),
                ..FaultSpec::status(LIST, 429).times(1)
            },
            ok: true,
            requests: 2..=2,
            min_elapsed: Duration::from_secs(2),
        },
        Probe {
            what: "403 secondary limit, retry-after 1: waits >= 1 s, pass ok",
            spec: FaultSpec {
                retry_after: Some(1),
                message: Some("You have exceeded a secondary rate limit.".to_owned()),
                ..FaultSpec::status(LIST, 403).times(1)
            },
            ok: true,
            requests: 2..=2,
            min_elapsed: Duration::from_secs(1),
        },
        Probe {
            what: "two 503 on list: retried with backoff, pass ok",
            spec: FaultSpec::status(LIST, 503).times(2),
            ok: true,
            requests: 3..=3,
            min_elapsed: Duration::from_millis(100),
        },
        Probe {
            what: "503 storm on list: gives up after 1 + 3 retries, pass fails, touches nothing",
            spec: FaultSpec::status(LIST, 503).times(50),
            ok: false,
            requests: 1..=(1 + MAX_RETRIES as u64),
            min_elapsed: Duration::ZERO,
        },
        Probe {
            what: "plain 403 (no retry-after): not retried, pass fails",
            spec: FaultSpec {
                message: Some("Resource not accessible by integration".to_owned()),
                ..FaultSpec::status(LIST, 403).times(50)
            },
            ok: false,
            requests: 1..=1,
            min_elapsed: Duration::ZERO,
        },
    ];
    for probe in probes {
        fleet.settle(admin, quantity).await?;
        let before_instances: BTreeSet<String> =
            fleet.provider.instance_names().into_iter().collect();
        outside.reset_request_counts().await?;
        admin.fault(&probe.spec).await?;
        let started = Instant::now();
        let result = fleet.manager.reconcile(quantity, &fleet.resources).await;
        let elapsed = started.elapsed();
        admin.clear_faults().await?;
        let requests = list_requests(outside).await?;
        let after: BTreeSet<String> = fleet.provider.instance_names().into_iter().collect();
        let good = result.is_ok() == probe.ok
            && probe.requests.contains(&requests)
            && elapsed >= probe.min_elapsed
            && after == before_instances;
        counts.add("backoff probes", 1);
        println!(
            "    probe [{}] {}: list requests {requests}, {:.2} s, pass {}",
            if good { "ok" } else { "FAILED" },
            probe.what,
            elapsed.as_secs_f64(),
            if result.is_ok() { "ok" } else { "failed" }
        );
        if !good {
            counts.fail(format!(
                "probe {}: ok={} requests={requests} elapsed={elapsed:?} instances changed={}",
                probe.what,
                result.is_ok(),
                after != before_instances
            ));
        }
    }
    Ok(())
}

async fn r3_mode(
    outside: &Arc<Outside>,
    mode: RegistrationMode,
    app: &str,
    passes: u64,
    seed: u64,
) -> anyhow::Result<Counts> {
    let started = Instant::now();
    let mut counts = Counts::new("R3");
    let admin = Admin::new(outside)?;
    admin.lift_rate_limit().await?;
    let fleet = ChaosFleet::new(outside, app, mode).await?;
    let mut rng = Rng::new(seed);
    let quantity = 6usize;
    let mut counted = BTreeSet::new();
    fleet.settle(&admin, quantity).await?;
    backoff_probes(outside, &admin, &fleet, quantity, &mut counts).await?;
    fleet.settle(&admin, quantity).await?;
    let stats_before = fleet.client.stats().total();
    let endpoints = match mode {
        RegistrationMode::Token => [LIST, DELETE, REG_TOKEN],
        RegistrationMode::Jit => [LIST, DELETE, JIT],
    };

    for pass in 0..passes {
        // Life goes on around the storm: jobs finish, new jobs keep runners busy, processes die.
        if rng.chance(0.3) {
            counts.add(
                "jobs finished before the pass",
                fleet.complete_jobs(&admin).await? as u64,
            );
        }
        if rng.chance(0.3) {
            admin.enqueue(&fleet.label).await?;
            counts.add("jobs queued before the pass", 1);
        }
        let regs = fleet.registrations(&admin).await?;
        let mut killed_process = None;
        if rng.chance(0.15) {
            let idle: Vec<&RunnerView> = regs.iter().filter(|r| !r.busy).collect();
            if let Some(r) = rng.pick(&idle) {
                fleet.provider.kill_runner(&r.name);
                killed_process = Some(r.name.clone());
                counts.add("runner processes killed before the pass", 1);
            }
        }
        let healthy: Vec<String> = regs
            .iter()
            .filter(|r| r.status == "online" && !r.busy)
            .filter(|r| Some(&r.name) != killed_process.as_ref())
            .filter(|r| {
                fleet
                    .provider
                    .instance(&r.name)
                    .is_some_and(|i| i.runner_alive)
            })
            .map(|r| r.name.clone())
            .collect();

        // The storm.
        for _ in 0..=rng.below(3) {
            let storm = *rng.pick(&Storm::ALL).context("storm")?;
            let endpoint = *rng.pick(&endpoints).context("endpoint")?;
            admin.fault(&storm.spec(endpoint, &mut rng)).await?;
            counts.add(&format!("faults injected: {}", storm.name()), 1);
        }

        // Instances sampled every millisecond during the pass.
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop, provider) = (peak.clone(), stop.clone(), fleet.provider.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(provider.instance_names().len(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let result = fleet.manager.reconcile(quantity, &fleet.resources).await;
        stop.store(true, Ordering::Relaxed);
        sampler.await?;
        admin.clear_faults().await?;
        let peak = peak
            .load(Ordering::Relaxed)
            .max(fleet.provider.instance_names().len());
        match &result {
            Ok(report) if report.failed.is_empty() => counts.add("passes ok", 1),
            Ok(_) => counts.add("passes partial (some action failed)", 1),
            Err(_) => counts.add("passes failed (observe failed, nothing touched)", 1),
        }

        // Checks.
        for name in &healthy {
            if fleet.provider.instance(name).is_none() {
                counts.add("healthy runners deleted", 1);
                counts.fail(format!("pass {pass}: healthy runner {name} was deleted"));
            }
        }
        if peak > quantity {
            counts.add("passes with instances above quantity", 1);
            let why = match &result {
                Ok(r) => format!(
                    "created {}, removed {:?}, failed {:?}",
                    r.created.len(),
                    r.removed,
                    r.failed
                ),
                Err(e) => format!("pass error: {e}"),
            };
            counts.fail(format!(
                "pass {pass}: {peak} instances > quantity {quantity} ({why})"
            ));
        }
        let regs_after = fleet.registrations(&admin).await?;
        let live = regs_after.iter().filter(|r| r.status == "online").count();
        if live > quantity {
            counts.fail(format!(
                "pass {pass}: {live} online registrations > {quantity}"
            ));
        }
        let extra = regs_after.len().saturating_sub(quantity) as u64;
        counts.add(
            "offline registrations above quantity after a pass (removed later)",
            extra,
        );
        for note in killed_jobs(&fleet, &admin, &mut counted).await? {
            counts.add("busy jobs killed", 1);
            counts.fail(format!("pass {pass}: {note}"));
        }
        counts.iterations += 1;
    }

    // Recovery: faults stopped, jobs finish; one pass must converge.
    admin.clear_faults().await?;
    fleet.complete_jobs(&admin).await?;
    let report = fleet.manager.reconcile(quantity, &fleet.resources).await;
    let instances = fleet.provider.instance_names().len();
    let regs = fleet.registrations(&admin).await?;
    let online = regs.iter().filter(|r| r.status == "online").count();
    let second = fleet.manager.reconcile(quantity, &fleet.resources).await;
    let converged = report.as_ref().is_ok_and(|r| r.failed.is_empty())
        && instances == quantity
        && regs.len() == quantity
        && online == quantity
        && second
            .as_ref()
            .is_ok_and(|r| r.created.is_empty() && r.removed.is_empty() && r.failed.is_empty());
    counts.add(
        "converged in one pass after the storm",
        u64::from(converged),
    );
    if !converged {
        counts.fail(format!(
            "no convergence in one pass: {instances} instances, {} registrations ({online} online), first {:?}, second {:?}",
            regs.len(),
            report.map(|r| (r.created.len(), r.removed.len(), r.failed)),
            second.map(|r| (r.created.len(), r.removed.len(), r.failed.len())),
        ));
    }
    let stats = fleet.client.stats().total();
    counts.add(
        "client retries (5xx, timeouts, drops)",
        stats.retries - stats_before.retries,
    );
    counts.add(
        "client rate-limit waits (retry-after honoured)",
        stats.rate_limit_waits - stats_before.rate_limit_waits,
    );
    counts.add(
        "client calls that failed",
        stats.errors - stats_before.errors,
    );
    counts.leaks += fleet.drain_leaks(&admin).await?;
    counts.add("healthy runners deleted", 0);
    counts.add("busy jobs killed", 0);
    counts.elapsed = started.elapsed();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(5)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(5)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 5));
        assert!((0..5).all(|v| xs.contains(&v)), "all values drawn: {xs:?}");
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn counts_merge_and_render() {
        let mut a = Counts::new("R9");
        a.add("x", 2);
        let mut b = Counts::new("R9");
        b.add("x", 3);
        b.fail("boom".to_owned());
        b.iterations = 4;
        a.merge(b);
        assert_eq!((a.iterations, a.failures, a.detail("x")), (4, 1, 5));
        assert!(a.render().contains("FAILURE: boom"));
    }
}
