//! `RunnerManager`: the seed's API, and the reconcile loop read top to bottom.
//!
//! One pass: check the runner binary → observe both sides concurrently → [`plan`] (pure) →
//! execute removals (registration first, GitHub's "busy" means skip) → create the shortfall in
//! parallel → emit telemetry → return a report. Passes (reconcile and flush) never overlap: a
//! mutex serialises them. A pass is level-triggered and idempotent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::{stream, StreamExt};
use time::OffsetDateTime;

use crate::events::{
    Metrics, Reconciliation, RunnerCounts, RunnerInstalled, RunnerRemoved, RunnerStart, RunnerStop,
    Telemetry,
};
use crate::guest::{self, INSTALLED_FILE, POLICY_REFUSED_FILE, POST_JOB_FILE, PRE_JOB_FILE};
use crate::install::{self, InstallSettings, RegistrationSecret};
use crate::model::{
    GitHubPath, InstanceType, ModelError, Owner, ProxySettings, RegistrationMode, Resources,
    RunnerName, Secret,
};
use crate::plan::{
    plan, plan_flush, Desired, Observed, ObservedInstance, ObservedRegistration, Probe, Removal,
    RemovalReason, RunnerState,
};
use crate::policy::{PolicyClient, PolicyConfig, PolicyError};
use crate::provider::{
    DeleteOutcome, InstanceProvider, InstanceSpec, InstanceStatus, ProviderError, RegistryError,
    RunnerDownload, RunnerRegistry,
};
use crate::runner_bin::{select_download, CachedBinary, RunnerBinCache, RunnerBinError};

/// How many runners a pass creates at once unless configured otherwise.
pub const DEFAULT_CREATE_CONCURRENCY: usize = 16;

/// The manager's settings (the seed's `RunnerManagerConfig`, minus the credentials and
/// connections, which live in the GitHub and LXD backends).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub path: GitHubPath,
    /// `https://github.com` or the simulator's `http://host:port`.
    pub web_url: String,
    /// Image alias; also a runner label.
    pub image: String,
    pub instance_type: InstanceType,
    /// Labels besides `<app_name>` and `<image>`.
    pub extra_labels: Vec<String>,
    pub registration_mode: RegistrationMode,
    /// When set, a `dir` pool `runner` at this path holds the root disks.
    pub lxd_storage_path: Option<PathBuf>,
    /// Holds the runner binary cache.
    pub state_dir: PathBuf,
    pub issue_metrics: bool,
    pub events_log: PathBuf,
    pub policy: Option<PolicyConfig>,
    /// How many runners are created at once.
    pub create_concurrency: usize,
    pub boot_grace: Duration,
    pub offline_grace: Duration,
    /// How long a started instance may take to answer exec.
    pub ready_timeout: Duration,
    /// How long `flush` with busy runners waits for GitHub to release a stopped runner.
    pub busy_stop_timeout: Duration,
}

impl ManagerConfig {
    /// The defaults: container, token mode, no metrics, 16 parallel creations, 5 min graces.
    pub fn new(
        path: GitHubPath,
        web_url: &str,
        image: &str,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            path,
            web_url: web_url.trim_end_matches('/').to_owned(),
            image: image.to_owned(),
            instance_type: InstanceType::Container,
            extra_labels: Vec::new(),
            registration_mode: RegistrationMode::Token,
            lxd_storage_path: None,
            state_dir: state_dir.into(),
            issue_metrics: false,
            events_log: PathBuf::from("/var/log/github-runner-metrics.log"),
            policy: None,
            create_concurrency: DEFAULT_CREATE_CONCURRENCY,
            boot_grace: Duration::from_secs(300),
            offline_grace: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(300),
            busy_stop_timeout: Duration::from_secs(120),
        }
    }
}

/// The two outside systems and the metrics registry the manager reports into.
#[derive(Clone)]
pub struct Backends {
    pub provider: Arc<dyn InstanceProvider>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ModelError),
    #[error("no runner binary is cached: run update_runner_bin before reconciling")]
    MissingRunnerBinary,
    #[error("runner binary: {0}")]
    RunnerBinary(#[from] RunnerBinError),
    #[error("no runner binary for os {os} and arch {arch} in github's downloads list")]
    NoMatchingDownload { os: String, arch: String },
    #[error("listing instances: {0}")]
    ListInstances(#[source] ProviderError),
    #[error("{what}: {source}")]
    Registry {
        what: &'static str,
        #[source]
        source: RegistryError,
    },
    #[error("policy service: {0}")]
    Policy(#[from] PolicyError),
    #[error("taking the pass lock {path}: {source}")]
    PassLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A failed action in a pass. `runner` is `None` for a step shared by all runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub runner: Option<RunnerName>,
    /// `create`, `prepare` or `remove`.
    pub action: &'static str,
    pub error: String,
}

/// What a reconcile pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The seed's return value: quantity minus the healthy runners before acting.
    pub delta: i64,
    pub created: Vec<RunnerName>,
    pub removed: Vec<(RunnerName, RemovalReason)>,
    /// Planned for removal but GitHub said busy: left running.
    pub skipped_busy: Vec<RunnerName>,
    pub failed: Vec<Failure>,
    pub counts: RunnerCounts,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub removed: Vec<RunnerName>,
    pub skipped_busy: Vec<RunnerName>,
    pub failed: Vec<Failure>,
}

/// Which runners `flush` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Spare runners GitHub reports busy (the seed's `flush_busy=False`).
    IdleOnly,
    /// Also stop busy ones (the seed's `flush_busy=True`).
    IncludingBusy,
}

/// A runner as GitHub reports it (the seed's `RunnerInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    pub name: RunnerName,
    pub online: bool,
    pub busy: bool,
}

impl RunnerInfo {
    /// `online` or `offline`, as GitHub writes it.
    pub fn status(&self) -> &'static str {
        if self.online {
            "online"
        } else {
            "offline"
        }
    }
}

/// State carried between passes.
#[derive(Debug, Default)]
struct PassState {
    /// When each registration was first seen offline, for `offline_grace`.
    offline_since: HashMap<RunnerName, Instant>,
    /// When each recent `generate-jitconfig` was sent, for [`JIT_PER_MINUTE`].
    jit_sent: std::collections::VecDeque<Instant>,
}

/// JIT registrations sent per rolling minute. GitHub's secondary limit is 80 content-creating
/// requests per minute; the rest of the shortfall waits for the next pass instead of being
/// refused (and counted as abuse).
pub const JIT_PER_MINUTE: usize = 70;

enum RemoveOutcome {
    Removed,
    SkippedBusy,
    Failed(String),
}

/// Manages the runners of one unit of one application.
pub struct RunnerManager {
    owner: Owner,
    config: ManagerConfig,
    install: InstallSettings,
    provider: Arc<dyn InstanceProvider>,
    registry: Arc<dyn RunnerRegistry>,
    runner_bin: RunnerBinCache,
    policy: Option<PolicyClient>,
    telemetry: Telemetry,
    pass: tokio::sync::Mutex<PassState>,
}

impl RunnerManager {
    /// The seed's `RunnerManager(app_name, unit, config, proxies)`, with the backends injected.
    /// `proxies` is copied, never modified.
    pub fn new(
        app_name: &str,
        unit: u32,
        config: ManagerConfig,
        proxies: &ProxySettings,
        backends: Backends,
    ) -> Result<Self, ManagerError> {
        let owner = Owner::new(app_name, unit)?;
        let policy = config.policy.clone().map(PolicyClient::new).transpose()?;
        let policy_host = config.policy.as_ref().and_then(|p| {
            reqwest::Url::parse(&p.runner_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
        });
        let runner_proxies = match &policy_host {
            Some(host) if !proxies.is_empty() => proxies.with_no_proxy(&[host.as_str()]),
            _ => proxies.clone(),
        };
        let mut labels = vec![app_name.to_owned(), config.image.clone()];
        labels.extend(config.extra_labels.iter().cloned());
        let install = InstallSettings {
            registration_url: format!("{}/{}", config.web_url, config.path.path()),
            path: config.path.clone(),
            labels,
            proxies: runner_proxies,
            policy_url: config.policy.as_ref().map(|p| p.runner_url.clone()),
            ready_timeout: config.ready_timeout,
        };
        let runner_bin = RunnerBinCache::new(config.state_dir.join("runner-binary"))?;
        let events_log = config.issue_metrics.then(|| config.events_log.clone());
        let telemetry = Telemetry::new(backends.metrics, app_name, events_log);
        if let Some(current) = runner_bin.current() {
            telemetry.metrics.set_runner_binary(&current.filename);
        }
        Ok(Self {
            owner,
            config,
            install,
            provider: backends.provider,
            registry: backends.registry,
            runner_bin,
            policy,
            telemetry,
            pass: tokio::sync::Mutex::new(PassState::default()),
        })
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.telemetry.metrics
    }

    /// Replaces the telemetry clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.telemetry = self.telemetry.with_clock(clock);
        self
    }

    /// Whether a verified runner binary is cached.
    pub fn check_runner_bin(&self) -> bool {
        self.runner_bin.check()
    }

    /// The cached binary, if any.
    pub fn runner_bin(&self) -> Option<CachedBinary> {
        self.runner_bin.current()
    }

    /// The first of GitHub's downloads for `os`/`arch` (`linux`, `x64`).
    pub async fn get_latest_runner_bin_url(
        &self,
        os: &str,
        arch: &str,
    ) -> Result<RunnerDownload, ManagerError> {
        let downloads =
            self.registry
                .runner_downloads()
                .await
                .map_err(|source| ManagerError::Registry {
                    what: "listing runner downloads",
                    source,
                })?;
        select_download(&downloads, os, arch)
            .cloned()
            .ok_or_else(|| ManagerError::NoMatchingDownload {
                os: os.to_owned(),
                arch: arch.to_owned(),
            })
    }

    /// Downloads, verifies and switches to `download`; on error the old binary stays in use.
    pub async fn update_runner_bin(
        &self,
        download: &RunnerDownload,
    ) -> Result<CachedBinary, ManagerError> {
        match self.runner_bin.update(download).await {
            Ok(cached) => {
                tracing::info!(message = "Runner binary updated.", filename = %cached.filename, sha256 = %cached.sha256);
                self.telemetry.metrics.set_runner_binary(&cached.filename);
                Ok(cached)
            }
            Err(error) => {
                self.telemetry.metrics.error("runner_binary");
                Err(error.into())
            }
        }
    }

    /// This manager's runners as GitHub reports them.
    pub async fn get_github_info(&self) -> Result<Vec<RunnerInfo>, ManagerError> {
        let registrations = self.list_owned_registrations().await?;
        Ok(registrations
            .into_iter()
            .map(|(name, r)| RunnerInfo {
                name,
                online: r.online,
                busy: r.busy,
            })
            .collect())
    }

    /// Brings this manager's runners to `quantity`.
    #[tracing::instrument(skip_all, fields(app = %self.owner.app_name(), unit = self.owner.unit(), quantity))]
    pub async fn reconcile(
        &self,
        quantity: usize,
        resources: &Resources,
    ) -> Result<ReconcileReport, ManagerError> {
        let mut pass = self.pass.lock().await;
        let _lock = self.lock_pass().await?;
        let started = Instant::now();

        // 1. The binary first: without it nothing is touched. It is only read (and re-verified)
        // when the plan creates runners, so an idle pass costs no disk reads.
        if !self.runner_bin.check() {
            return Err(ManagerError::MissingRunnerBinary);
        }

        // 2. Observe both sides; a failure here touches nothing.
        let observed = self.observe(&mut pass, true).await?;

        // 3. Plan.
        let desired = Desired {
            quantity,
            boot_grace: self.config.boot_grace,
            offline_grace: self.config.offline_grace,
        };
        let mut plan = plan(&observed, &desired);
        if self.config.registration_mode == RegistrationMode::Jit {
            let window = Duration::from_secs(60);
            while pass
                .jit_sent
                .front()
                .is_some_and(|sent| sent.elapsed() >= window)
            {
                pass.jit_sent.pop_front();
            }
            let budget = JIT_PER_MINUTE.saturating_sub(pass.jit_sent.len());
            if plan.create > budget {
                tracing::info!(
                    message = "Pacing JIT registrations; the rest waits for the next pass.",
                    planned = plan.create,
                    budget
                );
                plan.create = budget;
            }
            pass.jit_sent
                .extend(std::iter::repeat_n(Instant::now(), plan.create));
        }
        // A corrupt cached tarball fails the pass here, before anything is touched.
        let tarball = if plan.create > 0 {
            match self.runner_bin.load().await {
                Ok((_, tarball)) => Some(tarball),
                Err(RunnerBinError::Missing) => return Err(ManagerError::MissingRunnerBinary),
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let mut report = ReconcileReport {
            delta: plan.delta,
            counts: count_states(plan.states.values()),
            ..ReconcileReport::default()
        };
        tracing::info!(
            message = "Planned.",
            delta = plan.delta,
            removals = plan.removals.len(),
            create = plan.create
        );

        // 4. Remove unhealthy, orphan, dangling and surplus runners; registration first.
        let outcomes = self.remove_all(&plan.removals, FlushMode::IdleOnly).await;
        for (removal, outcome) in plan.removals.iter().zip(outcomes) {
            match outcome {
                RemoveOutcome::Removed => {
                    report.removed.push((removal.name.clone(), removal.reason))
                }
                RemoveOutcome::SkippedBusy => report.skipped_busy.push(removal.name.clone()),
                RemoveOutcome::Failed(error) => report.failed.push(Failure {
                    runner: Some(removal.name.clone()),
                    action: "remove",
                    error,
                }),
            }
        }

        // A runner whose removal failed still has its instance: creating its replacement now
        // would take the fleet above `quantity`, so the replacement waits for the next pass.
        let still_there = plan
            .removals
            .iter()
            .filter(|removal| removal.has_instance)
            .filter(|removal| {
                report
                    .failed
                    .iter()
                    .any(|f| f.runner.as_ref() == Some(&removal.name))
            })
            .count();
        plan.create = plan.create.saturating_sub(still_there);

        // 5. Create the shortfall, in parallel (nothing to prepare when removals that failed
        // took the whole shortfall).
        if let Some(tarball) = tarball.filter(|_| plan.create > 0) {
            match self.prepare_creation(resources).await {
                Ok(prepared) => {
                    let results: Vec<Result<RunnerName, Failure>> = stream::iter(0..plan.create)
                        .map(|_| self.create_runner(&prepared, &tarball))
                        .buffer_unordered(self.config.create_concurrency.max(1))
                        .collect()
                        .await;
                    for result in results {
                        match result {
                            Ok(name) => report.created.push(name),
                            Err(failure) => report.failed.push(failure),
                        }
                    }
                    report.created.sort();
                }
                Err(failure) => report.failed.push(failure),
            }
        }

        // 6. Telemetry and the report.
        for failure in &report.failed {
            self.telemetry.metrics.error(match failure.action {
                "create" => "create",
                "prepare" => "prepare",
                _ => "remove",
            });
        }
        let scaled_down = report
            .removed
            .iter()
            .filter(|(_, r)| *r == RemovalReason::ScaleDown)
            .count();
        Reconciliation {
            crashed_runners: report.removed.iter().filter(|(_, r)| r.is_crash()).count(),
            idle_runners: (report.counts.idle + report.created.len()).saturating_sub(scaled_down),
            counts: report.counts,
            duration: started.elapsed(),
            result: if report.failed.is_empty() {
                "ok"
            } else {
                "partial"
            },
        }
        .emit(&self.telemetry);
        Ok(report)
    }

    /// Removes this manager's runners; busy ones only with [`FlushMode::IncludingBusy`].
    #[tracing::instrument(skip_all, fields(app = %self.owner.app_name(), unit = self.owner.unit(), ?mode))]
    pub async fn flush(&self, mode: FlushMode) -> Result<FlushReport, ManagerError> {
        let mut pass = self.pass.lock().await;
        let _lock = self.lock_pass().await?;
        let observed = self.observe(&mut pass, false).await?;
        let removals = plan_flush(
            &observed,
            mode == FlushMode::IncludingBusy,
            self.config.boot_grace,
        );
        let outcomes = self.remove_all(&removals, mode).await;
        let mut report = FlushReport::default();
        for (removal, outcome) in removals.iter().zip(outcomes) {
            match outcome {
                RemoveOutcome::Removed => report.removed.push(removal.name.clone()),
                RemoveOutcome::SkippedBusy => report.skipped_busy.push(removal.name.clone()),
                RemoveOutcome::Failed(error) => {
                    self.telemetry.metrics.error("remove");
                    report.failed.push(Failure {
                        runner: Some(removal.name.clone()),
                        action: "remove",
                        error,
                    })
                }
            }
        }
        tracing::info!(
            message = "Flushed.",
            removed = report.removed.len(),
            skipped_busy = report.skipped_busy.len(),
            failed = report.failed.len()
        );
        Ok(report)
    }

    /// The file behind [`Self::lock_pass`]: one per app and unit in the state directory.
    pub fn pass_lock_path(&self) -> PathBuf {
        self.config.state_dir.join(format!(
            "pass-{}-{}.lock",
            self.owner.app_name(),
            self.owner.unit()
        ))
    }

    /// Waits for, then holds until dropped, an exclusive `flock` on [`Self::pass_lock_path`], so
    /// that passes of different processes on the same unit (the daemon and a `reconcile` or
    /// `flush` from the command line) never overlap. The kernel releases it when a process dies.
    /// Polled (`try_lock`, 100 ms), so a waiting pass can still be cancelled.
    async fn lock_pass(&self) -> Result<std::fs::File, ManagerError> {
        let path = self.pass_lock_path();
        let error = |source| ManagerError::PassLock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.config.state_dir).map_err(error)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !logged {
                        tracing::info!(
                            message = "Waiting for another process's pass on this unit to end.",
                            lock = %path.display()
                        );
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(error(source)),
            }
        }
    }

    // ---- observe ----

    async fn list_owned_registrations(
        &self,
    ) -> Result<Vec<(RunnerName, crate::provider::Registration)>, ManagerError> {
        let all = self
            .registry
            .list_runners()
            .await
            .map_err(|source| ManagerError::Registry {
                what: "listing github runners",
                source,
            })?;
        Ok(all
            .into_iter()
            .filter_map(|r| self.owner.parse_name(&r.name).map(|name| (name, r)))
            .collect())
    }

    /// Lists both sides concurrently, keeps what this owner owns, probes running instances.
    async fn observe(&self, pass: &mut PassState, probe: bool) -> Result<Observed, ManagerError> {
        let (instances, registrations) = tokio::join!(
            self.provider.list_instances(&self.owner),
            self.list_owned_registrations()
        );
        let instances = instances.map_err(ManagerError::ListInstances)?;
        let registrations = registrations?;
        let now = OffsetDateTime::now_utc();
        let owned: Vec<_> = instances
            .into_iter()
            .filter(|i| self.owner.owns_instance(&i.name, &i.config))
            .filter_map(|i| self.owner.parse_name(&i.name).map(|name| (name, i)))
            .collect();

        // A runner that GitHub reports online is alive: it polls GitHub. Only the others
        // (booting, offline, unregistered) are probed, so an idle pass over a healthy fleet
        // makes no exec at all. A dead runner goes offline on GitHub and is probed then.
        let online: std::collections::BTreeSet<&RunnerName> = registrations
            .iter()
            .filter(|(_, r)| r.online)
            .map(|(name, _)| name)
            .collect();
        // The futures are collected first: a stream over a borrowing closure would make the
        // pass's future not `Send` for every lifetime (rust-lang/rust#102211).
        let probe_futures: Vec<_> = owned
            .iter()
            .map(|(name, instance)| {
                let online = online.contains(name);
                async move {
                    if !probe || instance.status != InstanceStatus::Running {
                        return Probe::Unknown;
                    }
                    if online {
                        return Probe::Alive;
                    }
                    match self.provider.exec(name.as_str(), &guest::probe()).await {
                        Ok(out) if out.exit_code == 0 => Probe::Alive,
                        Ok(out) if out.exit_code == guest::PROBE_FINISHED => Probe::Finished,
                        // Still installing: as good as no answer (booting while young).
                        Ok(out) if out.exit_code == guest::PROBE_NOT_STARTED => Probe::Unknown,
                        Ok(_) => Probe::Dead,
                        Err(_) => Probe::Unknown,
                    }
                }
            })
            .collect();
        let probes: Vec<Probe> = stream::iter(probe_futures).buffered(16).collect().await;

        let instances = owned
            .into_iter()
            .zip(probes)
            .map(|((name, i), probe)| ObservedInstance {
                name,
                status: i.status,
                age: (now - i.created_at).try_into().unwrap_or(Duration::ZERO),
                probe,
            })
            .collect();

        let seen_now = Instant::now();
        pass.offline_since
            .retain(|name, _| registrations.iter().any(|(n, r)| n == name && !r.online));
        let registrations = registrations
            .into_iter()
            .map(|(name, r)| {
                let offline_for = if r.online {
                    Duration::ZERO
                } else {
                    seen_now - *pass.offline_since.entry(name.clone()).or_insert(seen_now)
                };
                ObservedRegistration {
                    id: r.id,
                    name,
                    online: r.online,
                    busy: r.busy,
                    offline_for,
                }
            })
            .collect();
        Ok(Observed {
            instances,
            registrations,
        })
    }

    // ---- remove ----

    async fn remove_all(&self, removals: &[Removal], mode: FlushMode) -> Vec<RemoveOutcome> {
        let removals = self.recheck_unregistered(removals).await;
        let removals: Vec<_> = removals
            .iter()
            .map(|removal| self.remove_runner(removal, mode))
            .collect();
        stream::iter(removals)
            .buffered(self.config.create_concurrency.max(1) * 2)
            .collect()
            .await
    }

    /// An instance planned for removal without a registration may have registered since the
    /// observation (an install left running by a killed process): look again, once per pass and
    /// only when there is such a removal, so that it too goes registration-first and a job it
    /// took is seen as busy. If GitHub cannot be asked, they go ahead as planned.
    async fn recheck_unregistered(&self, removals: &[Removal]) -> Vec<Removal> {
        if !removals
            .iter()
            .any(|r| r.registration.is_none() && r.has_instance)
        {
            return removals.to_vec();
        }
        let fresh: std::collections::BTreeMap<RunnerName, u64> = match self
            .list_owned_registrations()
            .await
        {
            Ok(all) => all.into_iter().map(|(name, r)| (name, r.id)).collect(),
            Err(error) => {
                tracing::warn!(message = "Could not re-check registrations before removing.", %error);
                return removals.to_vec();
            }
        };
        removals
            .iter()
            .map(|r| match (r.registration, fresh.get(&r.name)) {
                (None, Some(&id)) if r.has_instance => Removal {
                    registration: Some(id),
                    ..r.clone()
                },
                _ => r.clone(),
            })
            .collect()
    }

    /// Race-free removal: the registration goes first and GitHub's "busy" answer means skip. A
    /// healthy runner (scale-down, idle-only flush) is first quiesced in its instance: a job
    /// running there means busy whatever GitHub says, and otherwise the runner is frozen so that
    /// it takes no job while its registration goes; it is thawed again if the registration
    /// stays. When flushing busy runners, the runner is stopped inside its instance (it cancels
    /// its job and reports it, and GitHub then lets the registration go) before the registration
    /// is deleted; only then the instance.
    async fn remove_runner(&self, removal: &Removal, mode: FlushMode) -> RemoveOutcome {
        let name = removal.name.as_str();
        let mut still_busy = None;
        if let Some(id) = removal.registration {
            let quiesced = removal.has_instance && needs_job_check(removal.reason, mode);
            if quiesced {
                match self.quiesce(name).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::warn!(
                            message = "GitHub reports the runner idle but a job runs in its instance; keeping it.",
                            runner = name
                        );
                        return RemoveOutcome::SkippedBusy;
                    }
                    Err(error) => {
                        tracing::warn!(message = "Could not look for a job inside the instance; keeping the runner.", runner = name, %error);
                        self.resume(name).await;
                        return RemoveOutcome::Failed(format!(
                            "looking for a running job inside the instance before deregistering: {error}"
                        ));
                    }
                }
            }
            match self.registry.delete_registration(id).await {
                Ok(DeleteOutcome::Deleted | DeleteOutcome::NotFound) => {}
                Ok(DeleteOutcome::Busy) if mode == FlushMode::IdleOnly => {
                    tracing::info!(
                        message = "Runner is busy, skipping its removal.",
                        runner = name
                    );
                    if quiesced {
                        self.resume(name).await;
                    }
                    return RemoveOutcome::SkippedBusy;
                }
                Ok(DeleteOutcome::Busy) => {
                    if removal.has_instance {
                        self.stop_runner_inside(name).await;
                    }
                    match self.delete_registration_when_released(id).await {
                        Ok(true) => {}
                        Ok(false) => still_busy = Some(id),
                        Err(error) => {
                            return RemoveOutcome::Failed(format!(
                                "deleting github registration {id}: {error}"
                            ))
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(message = "Runner removal failed.", runner = name, %error);
                    if quiesced {
                        self.resume(name).await;
                    }
                    return RemoveOutcome::Failed(format!(
                        "deleting github registration {id}: {error}"
                    ));
                }
            }
        }
        if removal.has_instance {
            if self.config.issue_metrics {
                self.collect_job_events(name).await;
            }
            if let Err(error) = self.provider.delete(name).await {
                tracing::warn!(message = "Runner removal failed.", runner = name, %error);
                return RemoveOutcome::Failed(format!("deleting instance: {error}"));
            }
        }
        if let Some(id) = still_busy {
            // The instance is gone; the registration is dangling and goes on a later pass.
            return RemoveOutcome::Failed(format!(
                "instance deleted but github still reports registration {id} busy after {:?}",
                self.config.busy_stop_timeout
            ));
        }
        RunnerRemoved {
            name: name.to_owned(),
            reason: removal.reason,
        }
        .emit(&self.telemetry);
        RemoveOutcome::Removed
    }

    /// `Ok(true)` when a job runs inside the instance (its job-started record without a
    /// job-completed one, or a live `Runner.Worker`), whatever GitHub's busy flag says: operators
    /// of other managers report it reading `false`, and the delete succeeding, while a job runs.
    /// `Ok(false)`: no job, and the runner is frozen until [`Self::resume`] or its deletion.
    async fn quiesce(&self, name: &str) -> Result<bool, String> {
        match self.provider.exec(name, &guest::quiesce()).await {
            Ok(out) if out.exit_code == guest::JOB_RUNNING => Ok(true),
            Ok(out) if out.exit_code == 0 => Ok(false),
            Ok(out) => Err(format!(
                "the check exited with {}: {}",
                out.exit_code,
                out.stderr.trim()
            )),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Thaws a runner [`Self::quiesce`] froze whose registration stays. If this fails, the probe
    /// thaws it once GitHub shows it offline.
    async fn resume(&self, name: &str) {
        if let Err(error) = self.provider.exec(name, &guest::resume()).await {
            tracing::warn!(message = "Thawing the runner failed.", runner = name, %error);
        }
    }

    /// Asks the runner to stop: SIGTERM to its process group (start.sh runs in its own session).
    /// actions/runner and the fake runner cancel the running job and report it on SIGTERM.
    async fn stop_runner_inside(&self, name: &str) {
        if let Err(error) = self.provider.exec(name, &guest::stop()).await {
            tracing::warn!(message = "Stopping the runner failed.", runner = name, %error);
        }
    }

    /// Retries the delete while GitHub says busy, with backoff, up to `busy_stop_timeout`.
    /// `Ok(false)` when it is still busy then.
    async fn delete_registration_when_released(&self, id: u64) -> Result<bool, RegistryError> {
        let deadline = Instant::now() + self.config.busy_stop_timeout;
        let mut delay = Duration::from_millis(250);
        loop {
            tokio::time::sleep(delay).await;
            match self.registry.delete_registration(id).await? {
                DeleteOutcome::Deleted | DeleteOutcome::NotFound => return Ok(true),
                DeleteOutcome::Busy if Instant::now() + delay >= deadline => return Ok(false),
                DeleteOutcome::Busy => delay = (delay * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// Pulls the hooks' job records and emits `runner_start`/`runner_stop`; best effort.
    async fn collect_job_events(&self, name: &str) {
        let pull = |path: &'static str| async move {
            self.provider
                .pull_file(name, path)
                .await
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (pre, post, refused, installed) = tokio::join!(
            pull(PRE_JOB_FILE),
            pull(POST_JOB_FILE),
            pull(POLICY_REFUSED_FILE),
            pull(INSTALLED_FILE)
        );
        let records = JobRecords {
            pre_job: pre,
            post_job: post,
            policy_refused: refused.is_some(),
            installed_at: installed,
        };
        if let Some((start, stop)) = job_events(name, &records, self.telemetry.now()) {
            start.emit(&self.telemetry);
            stop.emit(&self.telemetry);
        }
    }

    // ---- create ----

    async fn prepare_creation(&self, resources: &Resources) -> Result<Prepared, Failure> {
        let prepare_failure = |error: String| Failure {
            runner: None,
            action: "prepare",
            error,
        };
        // Preflight, creating nothing: a missing image (or profile, below) would fail every
        // creation of the pass alike. One clear error, before any registration or instance.
        self.provider
            .check_image(&self.config.image)
            .await
            .map_err(|e| prepare_failure(e.to_string()))?;
        if let Some(path) = &self.config.lxd_storage_path {
            self.provider
                .ensure_pool(path)
                .await
                .map_err(|e| prepare_failure(format!("ensuring storage pool: {e}")))?;
        }
        let profile = self
            .provider
            .ensure_profile(
                resources,
                self.config.instance_type,
                self.config.lxd_storage_path.is_some(),
            )
            .await
            .map_err(|e| prepare_failure(format!("ensuring resource profile: {e}")))?;
        let profiles = vec!["default".to_owned(), profile];
        self.provider
            .check_profiles(&profiles)
            .await
            .map_err(|e| prepare_failure(e.to_string()))?;
        let registration_token = match self.config.registration_mode {
            RegistrationMode::Token => Some(
                self.registry
                    .registration_token()
                    .await
                    .map_err(|e| prepare_failure(format!("fetching a registration token: {e}")))?,
            ),
            RegistrationMode::Jit => None,
        };
        Ok(Prepared {
            profiles,
            registration_token,
        })
    }

    /// Creates, installs and starts one runner; on failure cleans up everything it made.
    async fn create_runner(
        &self,
        prepared: &Prepared,
        tarball: &[u8],
    ) -> Result<RunnerName, Failure> {
        let name = self.owner.new_runner_name();
        let started = Instant::now();
        let mut jit_id = None;
        let result = self
            .create_runner_steps(&name, prepared, tarball, &mut jit_id)
            .await;
        match result {
            Ok(()) => {
                RunnerInstalled {
                    name: name.to_string(),
                    duration: started.elapsed(),
                }
                .emit(&self.telemetry);
                Ok(name)
            }
            Err(error) => {
                tracing::warn!(message = "Runner creation failed, cleaning up.", runner = %name, %error);
                let cleanup = self.cleanup_failed(&name, jit_id).await;
                let error = match cleanup {
                    Ok(()) => error,
                    Err(cleanup) => format!("{error}; cleanup also failed: {cleanup}"),
                };
                Err(Failure {
                    runner: Some(name),
                    action: "create",
                    error,
                })
            }
        }
    }

    async fn create_runner_steps(
        &self,
        name: &RunnerName,
        prepared: &Prepared,
        tarball: &[u8],
        jit_id: &mut Option<u64>,
    ) -> Result<(), String> {
        let spec = InstanceSpec {
            name: name.clone(),
            image: self.config.image.clone(),
            instance_type: self.config.instance_type,
            profiles: prepared.profiles.clone(),
            config: self.owner.config_keys(),
            ephemeral: true,
        };
        // The instance boots while GitHub issues the runner's credentials; a JIT registration
        // made for an instance that then fails is removed by `cleanup_failed` (via `jit_id`).
        let create = async {
            // A start can fail transiently on a loaded host (measured on Incus 6.0: `forkstart`
            // failing while other instances are being deleted); the seed retried 5×. Up to
            // CREATE_ATTEMPTS, each failed instance removed before the next attempt.
            (|| async {
                match self.provider.create_and_start(&spec).await {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        let removed = self.provider.delete(name.as_str()).await;
                        Err(match removed {
                            // A missing image, profile... would fail every attempt alike.
                            Ok(()) if error.is_permanent() => CreateError::Stop(error.to_string()),
                            Ok(()) => CreateError::Retry(format!("creating instance: {error}")),
                            Err(e) => CreateError::Stop(format!(
                                "creating instance: {error}; removing the failed one: {e}"
                            )),
                        })
                    }
                }
            })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(CREATE_ATTEMPTS - 1),
            )
            .when(|e| matches!(e, CreateError::Retry(_)))
            .notify(|e, pause| {
                tracing::warn!(message = "Instance creation failed, retrying.", runner = %name,
                    error = %e, ?pause);
            })
            .await
            .map_err(|e| e.to_string())
        };
        let credentials = async {
            let secret = match &prepared.registration_token {
                Some(token) => RegistrationSecret::Token(token.clone()),
                None => {
                    let jit = self
                        .registry
                        .generate_jit(name, &self.install.labels)
                        .await
                        .map_err(|e| format!("generating jit config: {e}"))?;
                    *jit_id = Some(jit.runner_id);
                    RegistrationSecret::Jit(jit.encoded)
                }
            };
            let policy_token: Option<Secret> = match &self.policy {
                Some(policy) => Some(policy.one_time_token().await.map_err(|e| e.to_string())?),
                None => None,
            };
            Ok::<_, String>((secret, policy_token))
        };
        let (created, credentials) = tokio::join!(create, credentials);
        created?;
        let (secret, policy_token) = credentials?;
        install::install_runner(
            self.provider.as_ref(),
            name,
            &self.install,
            tarball,
            &secret,
            policy_token.as_ref(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Deletes the instance and any registration of a runner whose creation failed.
    async fn cleanup_failed(&self, name: &RunnerName, jit_id: Option<u64>) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Err(e) = self.provider.delete(name.as_str()).await {
            errors.push(format!("deleting instance: {e}"));
        }
        let id = match jit_id {
            Some(id) => Some(id),
            // Token mode: config.sh may have registered before a later step failed.
            None => match self.list_owned_registrations().await {
                Ok(all) => all.into_iter().find(|(n, _)| n == name).map(|(_, r)| r.id),
                Err(e) => {
                    errors.push(e.to_string());
                    None
                }
            },
        };
        if let Some(id) = id {
            if let Err(e) = self.registry.delete_registration(id).await {
                errors.push(format!("deleting registration {id}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Whether a removal looks inside the instance for a running job before deregistering: the
/// runners removed although healthy (scale-down, an idle-only flush). Only these candidates are
/// looked at, so it costs a few execs, not one per runner.
fn needs_job_check(reason: RemovalReason, mode: FlushMode) -> bool {
    match reason {
        RemovalReason::ScaleDown => true,
        RemovalReason::Flush => mode == FlushMode::IdleOnly,
        _ => false,
    }
}

struct Prepared {
    profiles: Vec<String>,
    registration_token: Option<Secret>,
}

fn count_states<'a>(states: impl Iterator<Item = &'a RunnerState>) -> RunnerCounts {
    let mut counts = RunnerCounts::default();
    for state in states {
        match state {
            RunnerState::Busy => counts.busy += 1,
            RunnerState::Idle { .. } => counts.idle += 1,
            RunnerState::Booting => counts.booting += 1,
            RunnerState::Remove(_) => counts.unhealthy += 1,
            RunnerState::BusyDangling => {}
        }
    }
    counts
}

/// The hooks' records pulled from an instance.
#[derive(Debug, Clone, Default)]
pub struct JobRecords {
    pub pre_job: Option<String>,
    pub post_job: Option<String>,
    pub policy_refused: bool,
    pub installed_at: Option<String>,
}

#[derive(serde::Deserialize)]
struct PreJob {
    timestamp: i64,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    github_event: String,
}

#[derive(serde::Deserialize)]
struct PostJob {
    timestamp: i64,
}

/// The `runner_start` and `runner_stop` events for a runner that took a job; `None` if it never did.
pub fn job_events(name: &str, records: &JobRecords, now: i64) -> Option<(RunnerStart, RunnerStop)> {
    let pre: PreJob = serde_json::from_str(records.pre_job.as_deref()?.trim()).ok()?;
    let post: Option<PostJob> = records
        .post_job
        .as_deref()
        .and_then(|p| serde_json::from_str(p.trim()).ok());
    let installed: Option<i64> = records
        .installed_at
        .as_deref()
        .and_then(|s| s.trim().parse().ok());
    let idle = installed.map_or(0, |i| (pre.timestamp - i).max(0));
    let (status, end) = match (&post, records.policy_refused) {
        (_, true) => (
            "repo-policy-check-failure",
            post.as_ref().map_or(now, |p| p.timestamp),
        ),
        (Some(p), false) => ("normal", p.timestamp),
        (None, false) => ("abnormal", now),
    };
    let start = RunnerStart {
        name: name.to_owned(),
        timestamp: pre.timestamp,
        workflow: pre.workflow.clone(),
        repo: pre.repo.clone(),
        github_event: pre.github_event.clone(),
        idle: u64::try_from(idle).unwrap_or(0),
    };
    let stop = RunnerStop {
        name: name.to_owned(),
        timestamp: end,
        workflow: pre.workflow,
        repo: pre.repo,
        github_event: pre.github_event,
        status: status.to_owned(),
        job_duration: u64::try_from(end - pre.timestamp).unwrap_or(0),
    };
    Some((start, stop))
}

/// How many times a runner's instance is created before its creation counts as failed.
const CREATE_ATTEMPTS: usize = 3;

/// A failed instance creation: worth another attempt, or not (its remains could not be removed).
#[derive(Debug)]
enum CreateError {
    Retry(String),
    Stop(String),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(e) | Self::Stop(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
