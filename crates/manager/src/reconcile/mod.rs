//! `RunnerManager`: the seed's API, and the reconcile pass read top to bottom.
//!
//! One pass: check the runner binary → observe both sides concurrently (`observe.rs`) →
//! [`plan`] (pure) → execute removals (registration first, GitHub's "busy" means skip;
//! `remove.rs`) → create the shortfall in parallel (`create.rs`) → emit telemetry → return a
//! report with a requeue hint. Passes (reconcile and flush) never overlap: a mutex serialises
//! them in the process, a `flock` across processes (`pass_lock.rs`). A pass is level-triggered
//! and idempotent.

mod create;
mod images;
mod jit_pacer;
mod job_events;
mod observe;
mod pass;
mod pass_lock;
mod remove;
mod status;

/// The runner-binary cache below the state directory.
const RUNNER_BIN_DIR: &str = "runner-binary";

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::create::{CreateError, PrepareError};
use self::jit_pacer::JitPacer;
pub use self::jit_pacer::JIT_PER_MINUTE;
pub use self::job_events::{job_events, JobRecords};
use self::remove::RemoveOutcome;
pub use self::remove::{QuiesceError, RemoveError};
pub use self::status::{FleetStatus, RunnerView};
use crate::events::{Metrics, ReconcileResult, Reconciliation, RunnerCounts, Telemetry};
use crate::install::InstallSettings;
use crate::jobs::{JobStore, JobStoreError, JOB_DB_FILE};
use crate::model::{
    GitHubPath, InstanceType, ModelError, Owner, ProxySettings, RegistrationMode, Resources,
    RunnerName,
};
use crate::plan::{plan_flush, RemovalReason, RunnerState};
use crate::policy::{PolicyClient, PolicyConfig, PolicyError};
use crate::pool::{DemandSettings, PoolDemand, PoolName, PoolSpec};
use crate::provider::{
    render_chain, InstanceProvider, ProviderError, RegistryError, RunnerDownload, RunnerRegistry,
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
    /// The pools of `[[pools]]`, sized by demand ([`RunnerManager::reconcile_demand`]).
    /// Empty: the single-pool form, sized by [`RunnerManager::reconcile`]'s quantity.
    pub pools: Vec<PoolSpec>,
    pub demand: DemandSettings,
    /// A queued job older than this leaves the job table (GitHub cancels it after 24 h).
    pub queued_expiry: Duration,
    /// Baked images: the canary's share of launches and when it is promoted.
    pub images: crate::images::ImageSettings,
    /// The single-pool form's placement on a cluster (`lxd.target`); a `[[pools]]` pool has
    /// its own in its [`PoolSpec`].
    pub placement: crate::pool::Placement,
    /// How far a cluster member's CPU and memory may be promised to runners.
    pub overcommit: crate::placement::Overcommit,
    /// Scale-set pools: what their listeners, passes and registry share (empty: none).
    pub scale_sets: Arc<crate::scaleset::ScaleSetHub>,
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
            pools: Vec::new(),
            demand: DemandSettings::default(),
            queued_expiry: Duration::from_secs(24 * 3600),
            images: crate::images::ImageSettings::default(),
            placement: crate::pool::Placement::default(),
            overcommit: crate::placement::Overcommit::default(),
            scale_sets: Arc::default(),
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

/// Why a call did nothing. Each message leaves its cause out and keeps it as the `source`:
/// render the chain with [`crate::provider::Chain`] (or anyhow's `{:#}`), so each cause is
/// written once.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("invalid configuration")]
    Config(#[from] ModelError),
    #[error("no runner binary is cached: run update_runner_bin before reconciling")]
    MissingRunnerBinary,
    /// Its messages all name the runner binary.
    #[error(transparent)]
    RunnerBinary(#[from] RunnerBinError),
    #[error("no runner binary for os {os} and arch {arch} in github's downloads list")]
    NoMatchingDownload { os: String, arch: String },
    #[error("listing instances")]
    ListInstances(#[source] ProviderError),
    #[error("listing the cluster's members")]
    ListMembers(#[source] ProviderError),
    #[error("{what}")]
    Registry {
        what: &'static str,
        #[source]
        source: RegistryError,
    },
    #[error("policy service")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
    #[error("no pool {0:?}: it is neither configured nor has runners")]
    UnknownPool(String),
    #[error("taking the pass lock {path}")]
    PassLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A step of a pass, as failures, logs and the `errors_total{kind}` metric name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The preflight shared by a pass's creations (image, pool, profiles, registration token).
    Prepare,
    /// Creating, installing and starting one runner.
    Create,
    /// Removing one runner.
    Remove,
}

impl Step {
    /// `prepare`, `create` or `remove`: the metric label and the word logs and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Create => "create",
            Self::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the label, so that `assert_eq!(failure.action, "create")` reads as it did
/// when the step was a string.
impl PartialEq<&str> for Step {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failed step of a pass. `runner` is `None` exactly for [`Step::Prepare`], a step shared
/// by all runners (the constructors keep it so). `error` is the step's error with its causes,
/// rendered once, here (see [`crate::provider::Chain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub runner: Option<RunnerName>,
    pub action: Step,
    pub error: String,
}

impl Failure {
    fn prepare(error: &PrepareError) -> Self {
        Self {
            runner: None,
            action: Step::Prepare,
            error: render_chain(error),
        }
    }

    /// `error` is already rendered: a creation adds its cleanup's failure to it.
    fn create(runner: RunnerName, error: String) -> Self {
        Self {
            runner: Some(runner),
            action: Step::Create,
            error,
        }
    }

    fn remove(runner: RunnerName, error: &RemoveError) -> Self {
        Self {
            runner: Some(runner),
            action: Step::Remove,
            error: render_chain(error),
        }
    }
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
    /// The pass left work for later: run the next one after this long rather than after the
    /// full interval (kube-rs's `Action::requeue`). Set when JIT pacing held creations back
    /// (until the pacing window frees a slot) or when a step failed (a short backoff that
    /// doubles with each failing pass in a row, from [`FAILED_STEP_REQUEUE`] up to
    /// [`FAILED_STEP_REQUEUE_MAX`]); the sooner of the two. `None`: nothing is left to do.
    pub requeue_after: Option<Duration>,
    /// Each pool planned in the pass (configured ones in order, then draining ones).
    pub pools: Vec<PoolReport>,
    /// Queued jobs no pool matches.
    pub unmatched_jobs: usize,
    /// Queued jobs whose pools are all at `max`.
    pub waiting_jobs: usize,
}

/// One pool in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    pub pool: PoolName,
    /// The runners wanted.
    pub target: usize,
    /// Before acting.
    pub counts: RunnerCounts,
    /// Queued jobs routed to it.
    pub queued: usize,
    pub created: usize,
    pub removed: usize,
    /// No longer configured: idle runners go, busy ones finish first.
    pub draining: bool,
    /// Runners wanted that no cluster member had room for: retried by a later pass.
    pub shortfall: usize,
    /// Why (`no_member`, `offline`, `full`), when `shortfall > 0`.
    pub shortfall_reason: Option<crate::placement::Shortfall>,
    /// Busy runners on an offline cluster member: jobs running on a lost member.
    pub lost_busy: Vec<RunnerName>,
}

impl ReconcileReport {
    /// `ok` without failed steps, else `partial`.
    pub fn result(&self) -> ReconcileResult {
        if self.failed.is_empty() {
            ReconcileResult::Ok
        } else {
            ReconcileResult::Partial
        }
    }
}

/// The requeue hint after the first pass with a failed step.
pub const FAILED_STEP_REQUEUE: Duration = Duration::from_secs(5);
/// The requeue hint when some runners found no cluster member with room: room may free (a
/// runner finishes, a member comes back) before the full interval.
pub const SHORTFALL_REQUEUE: Duration = Duration::from_secs(30);
/// The longest requeue hint after failed steps.
pub const FAILED_STEP_REQUEUE_MAX: Duration = Duration::from_secs(300);

/// The hint after `failing_passes` (≥ 1) passes in a row with a failed step.
fn failed_step_requeue(failing_passes: u32) -> Duration {
    let factor = 2u32.saturating_pow(failing_passes.saturating_sub(1).min(20));
    FAILED_STEP_REQUEUE
        .saturating_mul(factor)
        .min(FAILED_STEP_REQUEUE_MAX)
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
    /// Recent `generate-jitconfig` requests, for [`JIT_PER_MINUTE`].
    jit: JitPacer,
    /// Passes in a row with a failed step, for [`ReconcileReport::requeue_after`].
    failing_passes: u32,
    /// Runners seen online, for their boot time (reported once, when first seen online).
    seen_online: std::collections::HashSet<RunnerName>,
    /// Whether a pass observed before: the first one only learns what is online already.
    observed_before: bool,
    /// Runners seen on an offline cluster member: stale once their member is back.
    lost: std::collections::HashSet<RunnerName>,
}

/// Manages the runners of one unit of one application.
pub struct RunnerManager {
    owner: Owner,
    config: ManagerConfig,
    install: InstallSettings,
    provider: Arc<dyn InstanceProvider>,
    registry: Arc<dyn RunnerRegistry>,
    runner_bin: RunnerBinCache,
    /// One image build at a time.
    image_build: tokio::sync::Mutex<()>,
    /// The pool of each runner seen or created lately: a started job's queue time is counted
    /// for the pool of the runner that took it.
    runner_pools: parking_lot::Mutex<HashMap<String, PoolName>>,
    /// The job table (`<state_dir>/jobs.sqlite`).
    jobs: JobStore,
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
        let runner_bin = RunnerBinCache::new(config.state_dir.join(RUNNER_BIN_DIR))?;
        let jobs = JobStore::open(&config.state_dir.join(JOB_DB_FILE))?;
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
            image_build: tokio::sync::Mutex::new(()),
            runner_pools: parking_lot::Mutex::default(),
            jobs,
            policy,
            telemetry,
            pass: tokio::sync::Mutex::new(PassState::default()),
        })
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// What the scale-set listeners share with the passes.
    pub fn scale_set_hub(&self) -> &Arc<crate::scaleset::ScaleSetHub> {
        &self.config.scale_sets
    }

    /// The state directory (runner binaries, job table, locks).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.config.state_dir
    }

    pub(crate) fn provider(&self) -> &Arc<dyn InstanceProvider> {
        &self.provider
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub(crate) fn image_build_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.image_build
    }

    /// The cached binary and its (re-verified) tarball.
    pub(crate) async fn runner_bin_load(
        &self,
    ) -> Result<(CachedBinary, bytes::Bytes), RunnerBinError> {
        self.runner_bin.load().await
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

    /// Where the verified runner binaries are cached.
    pub fn runner_bin_dir(&self) -> std::path::PathBuf {
        self.config.state_dir.join(RUNNER_BIN_DIR)
    }

    /// The latest runner binary for the platform the runners run on
    /// ([`crate::runner_bin::platform`]).
    pub async fn latest_runner_download(&self) -> Result<RunnerDownload, ManagerError> {
        let (os, arch) = crate::runner_bin::platform();
        self.get_latest_runner_bin_url(os, arch).await
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

    /// Brings this manager's runners to `quantity`. Every pass, failed or not, emits one
    /// [`Reconciliation`] event: `ok`, `partial` (a step failed) or `error` (nothing was done).
    #[tracing::instrument(skip_all, fields(app = %self.owner.app_name(), unit = self.owner.unit(), quantity))]
    pub async fn reconcile(
        &self,
        quantity: usize,
        resources: &Resources,
    ) -> Result<ReconcileReport, ManagerError> {
        let pools = [self.single_pool(quantity, resources)];
        self.reconcile_pools(&pools, None).await
    }

    /// Brings every pool of the config to its demand: `min(max, busy + queued jobs routed to
    /// it + min_idle)`, from the observation and the job table; a pool no longer configured
    /// drains. `only`: act on that pool alone. Emits one [`Reconciliation`] event, as
    /// [`Self::reconcile`] does.
    #[tracing::instrument(skip_all, fields(app = %self.owner.app_name(), unit = self.owner.unit(), pool = ?only))]
    pub async fn reconcile_demand(
        &self,
        only: Option<&PoolName>,
    ) -> Result<ReconcileReport, ManagerError> {
        self.reconcile_pools(&self.config.pools, only).await
    }

    /// The configured pools (empty in the single-pool form).
    pub fn pools(&self) -> &[PoolSpec] {
        &self.config.pools
    }

    /// The single-pool form's pool: the config's image, type, labels and registration, with
    /// no pool key or label (its runners look as the seed's), `quantity` runners.
    pub fn single_pool(&self, quantity: usize, resources: &Resources) -> PoolSpec {
        PoolSpec::single(
            &self.config.image,
            self.config.instance_type,
            resources.clone(),
            self.config.extra_labels.clone(),
            self.config.registration_mode,
            quantity,
        )
        .with_placement(self.config.placement.clone())
    }

    /// What routing needs of a pool: its sizing, priority and every label of its runners.
    pub fn pool_demand(&self, pool: &PoolSpec) -> PoolDemand {
        pool.demand(self.owner.app_name())
    }

    /// The configured pool a job with these `runs-on` labels goes to first (by labels and
    /// priority; at run time a pool at `max` passes it to the next).
    pub fn route(&self, job_labels: &[String]) -> Option<PoolName> {
        let demands: Vec<_> = self
            .config
            .pools
            .iter()
            .map(|p| self.pool_demand(p))
            .collect();
        crate::pool::candidates(&demands, job_labels)
            .first()
            .map(|p| p.name.clone())
    }

    /// The job table.
    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    async fn reconcile_pools(
        &self,
        pools: &[PoolSpec],
        only: Option<&PoolName>,
    ) -> Result<ReconcileReport, ManagerError> {
        let mut pass = self.pass.lock().await;
        let started = Instant::now();
        let result = self.reconcile_pass(&mut pass, pools, only).await;
        let event = match &result {
            Ok(report) => {
                let scaled_down = report
                    .removed
                    .iter()
                    .filter(|(_, r)| *r == RemovalReason::ScaleDown)
                    .count();
                Reconciliation {
                    crashed_runners: report.removed.iter().filter(|(_, r)| r.is_crash()).count(),
                    idle_runners: (report.counts.idle + report.created.len())
                        .saturating_sub(scaled_down),
                    counts: report.counts,
                    duration: started.elapsed(),
                    result: report.result(),
                }
            }
            Err(error) => {
                tracing::warn!(message = "Reconciliation failed.", error = %crate::provider::Chain(error));
                Reconciliation {
                    crashed_runners: 0,
                    idle_runners: 0,
                    counts: RunnerCounts::default(),
                    duration: started.elapsed(),
                    result: ReconcileResult::Error,
                }
            }
        };
        event.emit(&self.telemetry);
        result
    }

    /// Removes this manager's runners; busy ones only with [`FlushMode::IncludingBusy`].
    pub async fn flush(&self, mode: FlushMode) -> Result<FlushReport, ManagerError> {
        self.flush_pool(mode, None).await
    }

    /// [`Self::flush`] of one pool's runners (`None`: every pool).
    #[tracing::instrument(skip_all, fields(app = %self.owner.app_name(), unit = self.owner.unit(), ?mode, pool = ?only))]
    pub async fn flush_pool(
        &self,
        mode: FlushMode,
        only: Option<&PoolName>,
    ) -> Result<FlushReport, ManagerError> {
        let mut pass = self.pass.lock().await;
        let _lock = self.lock_pass().await?;
        let mut observed = self.observe(&mut pass, false).await?;
        if let Some(only) = only {
            let mut parts = crate::demand::partition(&observed);
            observed = parts.remove(only).unwrap_or_default();
        }
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
                    self.telemetry.metrics.error(Step::Remove.as_str());
                    report
                        .failed
                        .push(Failure::remove(removal.name.clone(), &error))
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
            RunnerState::Lost { .. } => counts.lost += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests;
