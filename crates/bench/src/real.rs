//! Benchmarks on REAL Incus (`provisioning`, `pickup-latency`): an in-process github-sim on the
//! Incus bridge serving the fake runner, a manager over the real `LxdProvider` wrapped in a
//! [`TimingProvider`] that records every provider call per instance (the phase profile), the
//! bare-LXD floor done with our own `lxd` client, and a [`Guard`] that deletes every instance
//! with the run's name prefix, even on panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::Retryable;
use futures::future::join_all;
use manager::adapters::LxdProvider;
use manager::events::Metrics;
use manager::provider::{ExecPurpose, ExecRequest, InstanceProvider, ProviderError};
use manager::tap::{Call as TapCall, Tap, Tapped};
use manager::{
    Backends, FlushMode, GitHubPath, InstanceType, ManagerConfig, ProxySettings, Resources,
    RunnerManager,
};
use parking_lot::Mutex;

/// The repository the sim serves and the manager manages.
pub const REPO: &str = "octo/app";
/// The image alias `scripts/incus-env.sh up` imports.
pub const IMAGE: &str = "busybox";
/// The Incus bridge address containers reach the host at.
pub const BRIDGE: &str = "10.123.45.1:0";
const RUNNER_VERSION: &str = "2.329.0";

/// A short random tag for this run's instance names (`b<6 hex>`).
pub fn run_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("b{:06x}", hasher.finish() & 0xff_ffff)
}

/// Connects to the local Incus (its socket discovered): 10 s to connect, `request` for a
/// request, `operation` for an operation.
pub async fn connect_incus(request: Duration, operation: Duration) -> anyhow::Result<lxd::Client> {
    let timeouts = lxd::Timeouts {
        connect: Duration::from_secs(10),
        request,
        operation,
    };
    lxd::Client::connect(
        lxd::Endpoint::discover().context("an Incus socket")?,
        timeouts,
    )
    .await
    .context("connecting to Incus")
}

/// The median of `values` (the upper one of the middle two for an even count).
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The sim, the LXD client and the shared settings.
pub struct Rig {
    pub sim: Arc<github_sim::SimHandle>,
    pub lxd: lxd::Client,
    pub resources: Resources,
    /// Profiles of the manager's instances (`default` and the resource profile); the floor uses
    /// the same ones.
    pub profiles: Vec<String>,
    state: tempfile::TempDir,
}

impl Rig {
    /// Starts the sim on the bridge with the fake runner tarball and connects to Incus.
    pub async fn start() -> anyhow::Result<Self> {
        let lxd = lxd::Client::discover()
            .await
            .context("connecting to Incus")?;
        Self::start_on(lxd).await
    }

    /// A benchmark's start on the local Incus: the rig, a fresh [`run_tag`] and the [`Guard`] of
    /// the instances named after it (bind it last, so it is dropped first, while nothing else
    /// runs); logs `<name>: sim at …, instances named <tag>*`.
    pub async fn start_run(name: &str) -> anyhow::Result<(Self, String, Guard)> {
        let rig = Self::start().await?;
        let tag = run_tag();
        eprintln!(
            "{name}: sim at {}, instances named {tag}*",
            rig.sim.base_url()
        );
        let guard = Guard::new(tag.clone());
        Ok((rig, tag, guard))
    }

    /// [`Self::start`] on the server `lxd` speaks to (a cluster, say).
    pub async fn start_on(lxd: lxd::Client) -> anyhow::Result<Self> {
        let agent = github_sim::tarball::locate_or_build_agent().context("the fake runner")?;
        let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
        let listen: SocketAddr = BRIDGE.parse()?;
        let sim = github_sim::Sim::start(
            github_sim::SimConfig::default()
                .with_listen(listen)
                .with_runner_tarball(tarball, RUNNER_VERSION),
        )
        .await
        .context(
            "starting github-sim on the Incus bridge (run `sudo ./scripts/incus-env.sh up`)",
        )?;
        let resources = Resources::new(1, "256MiB", "1GiB")?;
        let profile = LxdProvider::new(lxd.clone())
            .ensure_profile(&resources, InstanceType::Container, false)
            .await?;
        Ok(Self {
            sim: Arc::new(sim),
            lxd,
            resources,
            profiles: vec!["default".to_owned(), profile],
            state: tempfile::tempdir()?,
        })
    }

    /// A manager for `app` (unit 0) over the real provider, timed; the runner binary installed.
    /// `concurrency`: `None` keeps `ManagerConfig`'s default (what the binary uses).
    pub async fn manager(
        &self,
        app: &str,
        concurrency: Option<usize>,
    ) -> anyhow::Result<(RunnerManager, Arc<Timeline>)> {
        self.manager_with(app, |config| {
            if let Some(n) = concurrency {
                config.create_concurrency = n;
            }
        })
        .await
    }

    /// [`Self::manager`] with its config changed by `adjust` first.
    pub async fn manager_with(
        &self,
        app: &str,
        adjust: impl FnOnce(&mut ManagerConfig),
    ) -> anyhow::Result<(RunnerManager, Arc<Timeline>)> {
        let timeline = Arc::new(Timeline::default());
        let manager = self
            .tapped_manager(app, self.state.path(), IMAGE, timeline.clone(), adjust)
            .await?;
        Ok((manager, timeline))
    }

    /// A manager for `app` (unit 0) over the real provider with every call reported to `tap`,
    /// launching `image`, its state in `state_root/<app>`, its config changed by `adjust`; the
    /// runner binary installed.
    pub async fn tapped_manager<T: Tap + 'static>(
        &self,
        app: &str,
        state_root: &std::path::Path,
        image: &str,
        tap: T,
        adjust: impl FnOnce(&mut ManagerConfig),
    ) -> anyhow::Result<RunnerManager> {
        let github = github::Client::new(github::ClientConfig::new(
            url::Url::parse(&self.sim.api_url())?,
            url::Url::parse(&self.sim.web_url())?,
            github::Scope::parse(REPO)?,
            github::Auth::Token(github::Secret::new(github_sim::DEFAULT_TOKEN)),
        ))?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry);
        let real = Backends::real(github, None, self.lxd.clone(), metrics);
        let backends = Backends {
            provider: Arc::new(Tapped::new(real.provider.clone(), tap)),
            ..real
        };
        let state = state_root.join(app);
        let mut config = ManagerConfig::new(
            GitHubPath::parse(REPO, "")?,
            &self.sim.web_url(),
            image,
            &state,
        );
        config.events_log = state.join("events.log");
        adjust(&mut config);
        let manager = RunnerManager::new(app, 0, config, &ProxySettings::default(), backends)?;
        crate::fleet::install_runner_bin(&manager).await?;
        Ok(manager)
    }

    /// Polls the sim every 20 ms from now until `n` runners named `prefix*` are online; returns
    /// when each came online (relative to `t0`).
    pub fn watch_online(
        &self,
        prefix: &str,
        n: usize,
        t0: Instant,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<anyhow::Result<BTreeMap<String, Duration>>> {
        let sim = self.sim.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let mut online = BTreeMap::new();
            loop {
                for runner in sim.runners() {
                    if runner.name.starts_with(&prefix) && runner.status == "online" {
                        online.entry(runner.name).or_insert_with(|| t0.elapsed());
                    }
                }
                if online.len() >= n {
                    return Ok(online);
                }
                if t0.elapsed() > timeout {
                    anyhow::bail!("{} of {n} runners online after {timeout:?}", online.len());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// [`Self::reconcile`] `n` from zero, timed from `t0` until all `n` runners named after the
    /// manager are online (each within `timeout`). A pass that did not create all `n` cleans up
    /// and fails.
    pub async fn reconcile_online(
        &self,
        manager: &RunnerManager,
        n: usize,
        t0: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Online> {
        let watcher = self.watch_online(&manager.owner().prefix(), n, t0, timeout);
        let report = tokio::time::timeout(timeout, manager.reconcile(n, &self.resources))
            .await
            .context("reconcile timed out")??;
        let reconcile = t0.elapsed();
        if !(report.failed.is_empty() && report.created.len() == n) {
            watcher.abort();
            self.clean(manager).await?;
            anyhow::bail!(
                "reconcile({n}) created {} of {n} runners; first failure: {:?}",
                report.created.len(),
                report.failed.first().map(|f| &f.error)
            );
        }
        Ok(Online {
            reconcile,
            at: watcher.await??,
        })
    }

    /// The floor: `n` instances of the image launched in parallel with the manager's profiles,
    /// plus one exec in each (within `exec_timeout`), spread over `members` (none: the server
    /// places them); returns the wall time. The instances are left for [`Self::delete_prefix`].
    pub async fn floor_on(
        &self,
        prefix: &str,
        n: usize,
        exec_timeout: Duration,
        members: &[String],
    ) -> anyhow::Result<Duration> {
        Floor {
            lxd: &self.lxd,
            image: IMAGE,
            profiles: &self.profiles,
            exec_timeout,
        }
        .launch(prefix, n, members)
        .await
    }

    /// The floor of `n` on the local server (30 s for each exec), measured, then its instances
    /// deleted whatever the outcome.
    pub async fn measure_floor(&self, prefix: &str, n: usize) -> anyhow::Result<Duration> {
        let floor = self.floor_on(prefix, n, Duration::from_secs(30), &[]).await;
        self.delete_prefix(prefix).await?;
        floor
    }

    /// Force-deletes every instance whose name starts with `prefix`, in parallel; returns the count.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        delete_prefix(&self.lxd, prefix).await
    }

    /// Flushes the manager (busy runners too), then deletes whatever is left under its prefix.
    pub async fn clean(&self, manager: &RunnerManager) -> anyhow::Result<()> {
        let started = Instant::now();
        let report = manager.flush(FlushMode::IncludingBusy).await?;
        if let Some(failure) = report.failed.first() {
            eprintln!(
                "flush: {} removal(s) failed; first: {}",
                report.failed.len(),
                failure.error
            );
        }
        let left = self.delete_prefix(&manager.owner().prefix()).await?;
        if left > 0 {
            eprintln!("clean: deleted {left} instance(s) flush left behind");
        }
        eprintln!("clean: {}", secs(started.elapsed()));
        Ok(())
    }
}

/// Force-deletes every instance whose name starts with `prefix`, in parallel (one that is gone
/// already is fine); returns the count.
pub async fn delete_prefix(lxd: &lxd::Client, prefix: &str) -> anyhow::Result<usize> {
    let names: Vec<String> = lxd
        .list_instances()
        .await?
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    let results = join_all(names.iter().map(|n| async move {
        let started = Instant::now();
        let result = lxd.force_delete_instance(n).await;
        if started.elapsed() > Duration::from_secs(5) {
            eprintln!("slow delete of {n}: {}", secs(started.elapsed()));
        }
        result
    }))
    .await;
    for (name, result) in names.iter().zip(results) {
        match result {
            Ok(_) => {}
            // An ephemeral instance can vanish between the stop and the delete.
            Err(e)
                if e.is_not_found()
                    || e.to_string()
                        .to_ascii_lowercase()
                        .contains("instance not found") => {}
            Err(e) => return Err(anyhow::anyhow!("deleting {name}: {e}")),
        }
    }
    Ok(names.len())
}

/// What [`Rig::reconcile_online`] measured.
#[derive(Debug)]
pub struct Online {
    /// From `t0` to the pass's end.
    pub reconcile: Duration,
    /// When each runner came online, from `t0`.
    pub at: BTreeMap<String, Duration>,
}

impl Online {
    /// When the last runner came online, from `t0`.
    pub fn last(&self) -> Duration {
        self.at.values().copied().max().unwrap_or_default()
    }
}

/// Runs `round` up to 3 times, counting the failed attempts in `failed`.
pub async fn retried<T, F, Fut>(failed: &mut usize, mut round: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match round().await {
            Ok(run) => return Ok(run),
            Err(e) if attempt < 3 => {
                *failed += 1;
                eprintln!("round failed, repeating it: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes every instance under `prefix` when dropped (on its own thread and runtime, so it
/// works while unwinding out of the benchmark's runtime too).
pub struct Guard {
    prefix: String,
    /// The server's socket; `None`: the local Incus, discovered.
    socket: Option<std::path::PathBuf>,
}

impl Guard {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            socket: None,
        }
    }

    /// A guard for instances of the server behind `socket` (a cluster member's).
    pub fn on_socket(prefix: impl Into<String>, socket: std::path::PathBuf) -> Self {
        Self {
            prefix: prefix.into(),
            socket: Some(socket),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let cleanup = clean_up_on_own_thread(self.socket.clone(), |lxd| async move {
            delete_prefix(&lxd, &prefix).await
        });
        match cleanup {
            Some(Ok(0)) => {}
            Some(Ok(n)) => eprintln!(
                "guard: deleted {n} leftover instance(s) under {}",
                self.prefix
            ),
            Some(Err(e)) => eprintln!("guard: cleanup of {} failed: {e:#}", self.prefix),
            None => eprintln!("guard: cleanup thread panicked or could not start its runtime"),
        }
    }
}

/// Runs `cleanup` with a client of the server behind `socket` (`None`: the local Incus,
/// discovered), within 120 s, on its own thread and runtime
/// ([`test_support::incus::block_on_own_thread`]): usable from `Drop`, also while unwinding out
/// of the benchmark's runtime. What `cleanup` deleted; `None` when the thread panicked or could
/// not start its runtime.
pub(crate) fn clean_up_on_own_thread<F, Fut>(
    socket: Option<std::path::PathBuf>,
    cleanup: F,
) -> Option<anyhow::Result<usize>>
where
    F: FnOnce(lxd::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    test_support::incus::block_on_own_thread(async move {
        let lxd = match socket {
            Some(path) => {
                lxd::Client::connect(lxd::Endpoint::Unix(path), lxd::Timeouts::default()).await?
            }
            None => lxd::Client::discover().await?,
        };
        tokio::time::timeout(Duration::from_secs(120), cleanup(lxd))
            .await
            .context("cleanup timed out")?
    })
}

/// The install phases, in the order a runner goes through them (`manager::install_runner`).
pub const PHASES: [&str; 4] = [
    "create+start",
    "push bundle (providers without stdin)",
    "setup exec (unpack, register, start)",
    "other",
];

/// One provider call.
#[derive(Debug, Clone)]
pub struct Call {
    pub instance: String,
    pub phase: &'static str,
    pub start: Instant,
    pub end: Instant,
}

/// Every provider call a manager made.
#[derive(Debug, Default)]
pub struct Timeline {
    calls: Mutex<Vec<Call>>,
    errors: Mutex<Vec<String>>,
}

impl Timeline {
    pub fn clear(&self) {
        self.calls.lock().clear();
        self.errors.lock().clear();
    }

    /// Provider errors since the last [`Self::clear`] (retried by the manager or not).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    /// Records a call of `instance` in `phase`, from `started` until now, and its `error`.
    pub fn push(
        &self,
        instance: &str,
        phase: &'static str,
        started: Instant,
        error: Option<&ProviderError>,
    ) {
        self.calls.lock().push(Call {
            instance: instance.to_owned(),
            phase,
            start: started,
            end: Instant::now(),
        });
        if let Some(error) = error {
            self.errors.lock().push(format!(
                "{instance} {phase}: {}",
                manager::provider::Chain(error)
            ));
        }
    }
}

/// Which phase an exec belongs to, by its purpose.
fn exec_phase(request: &ExecRequest) -> &'static str {
    match request.purpose {
        ExecPurpose::Setup => "setup exec (unpack, register, start)",
        ExecPurpose::Bake => "bake exec (image build)",
        ExecPurpose::Probe => "probe",
        ExecPurpose::Quiesce | ExecPurpose::Resume => "quiesce",
        ExecPurpose::Stop | ExecPurpose::Other => "other",
    }
}

impl Tap for Timeline {
    /// The calls of a runner's start (list, create, execs, files), by phase; the errors of its
    /// creation and bundle push.
    fn record(&self, call: TapCall<'_>, started: Instant, error: Option<&ProviderError>) {
        let phase = match call {
            TapCall::ListInstances => "list",
            TapCall::CreateAndStart(_) => "create+start",
            TapCall::Exec(_, request) => exec_phase(request),
            TapCall::PushFile(_, file) if file.path == manager::install::BUNDLE_PATH => {
                "push bundle (providers without stdin)"
            }
            TapCall::PushFile(..) | TapCall::PullFile(..) => "other",
            _ => return,
        };
        let error =
            error.filter(|_| matches!(call, TapCall::CreateAndStart(_) | TapCall::PushFile(..)));
        self.push(call.instance(), phase, started, error);
    }
}

/// The provider benchmarks run: `inner` with every call recorded in a [`Timeline`].
pub type TimingProvider = Tapped<Arc<Timeline>>;

/// Per-runner phase profile of one round started at `t0`: for each runner, the time spent in
/// each phase (sum of its calls, sleeps between probes counted in their phase), the wait before
/// its first call, and the wait from its last call until it showed online.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    /// Phase → mean seconds per runner.
    pub mean: BTreeMap<&'static str, f64>,
    pub runners: usize,
}

/// Builds the [`Profile`] of one round.
pub fn profile(calls: &[Call], online: &BTreeMap<String, Duration>, t0: Instant) -> Profile {
    let mut per: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in calls {
        per.entry(call.instance.as_str()).or_default().push(call);
    }
    let mut sums: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut runners = 0;
    for (instance, mut list) in per {
        // Calls of no instance (the list) are not a runner's.
        if instance.is_empty() {
            continue;
        }
        list.sort_by_key(|c| c.start);
        let (Some(first), Some(last)) = (list.first(), list.last()) else {
            continue;
        };
        runners += 1;
        *sums
            .entry("before first call (observe, token, slot)")
            .or_default() += first.start.saturating_duration_since(t0).as_secs_f64();
        // A call's phase also owns the gap up to the next call (probe back-off sleeps).
        for (i, call) in list.iter().enumerate() {
            let until = list.get(i + 1).map_or(call.end, |next| next.start);
            *sums.entry(call.phase).or_default() +=
                until.saturating_duration_since(call.start).as_secs_f64();
        }
        if let Some(at) = online.get(instance) {
            let last_end = last.end.saturating_duration_since(t0);
            *sums.entry("run.sh alive → online in sim").or_default() +=
                at.saturating_sub(last_end).as_secs_f64();
        }
    }
    let mean = sums
        .into_iter()
        .map(|(k, v)| (k, v / runners.max(1) as f64))
        .collect();
    Profile { mean, runners }
}

/// The rows of a phase table in install order.
pub fn phase_order() -> Vec<&'static str> {
    let mut order = vec!["before first call (observe, token, slot)"];
    order.extend(PHASES);
    order.push("run.sh alive → online in sim");
    order
}

/// The start of a `config.toml` for the real `runner-manager` binary against github-sim, on
/// busybox containers of the local Incus: the top level, `[github]`, `[lxd]` and `[runners]`
/// (last, so a caller may append keys to it, then its own tables). Paths are written as given.
pub fn binary_config(
    app: &str,
    repo: &str,
    state_dir: &std::path::Path,
    token_file: &std::path::Path,
    sim: &github_sim::SimHandle,
    quantity: u32,
) -> String {
    test_support::config::BinaryConfig {
        app,
        repo,
        image: IMAGE,
        state_dir,
        token_file,
        sim,
        quantity,
    }
    .render()
}

/// The floor every real-Incus benchmark compares with: `n` bare instances of `image` (an
/// alias) launched in parallel with `profiles`, plus one exec (`true`, within `exec_timeout`)
/// in each; the wall time. A launch is tried up to 3 times, as the manager does (a start can
/// fail transiently on a busy host). The instances are left for the caller to delete.
pub async fn launch_floor(
    lxd: &lxd::Client,
    image: &str,
    profiles: &[String],
    prefix: &str,
    n: usize,
    exec_timeout: Duration,
) -> anyhow::Result<Duration> {
    Floor {
        lxd,
        image,
        profiles,
        exec_timeout,
    }
    .launch(prefix, n, &[])
    .await
}

/// What [`launch_floor`] launches: bare instances of `image` (an alias) with `profiles`, one
/// exec (`true`, within `exec_timeout`) in each.
#[derive(Debug, Clone, Copy)]
pub struct Floor<'a> {
    pub lxd: &'a lxd::Client,
    pub image: &'a str,
    pub profiles: &'a [String],
    pub exec_timeout: Duration,
}

impl Floor<'_> {
    /// `n` instances `<prefix><i>` launched in parallel, launch `i` on
    /// `members[i % members.len()]` (`?target=`, so the floor is spread evenly; with no members
    /// the server places them); the wall time. The instances are left for the caller to delete.
    pub async fn launch(
        &self,
        prefix: &str,
        n: usize,
        members: &[String],
    ) -> anyhow::Result<Duration> {
        let Floor {
            lxd,
            image,
            profiles,
            exec_timeout,
        } = *self;
        let started = Instant::now();
        let launches = (0..n).map(|i| {
            let name = format!("{prefix}{i}");
            let member = (!members.is_empty()).then(|| members[i % members.len()].clone());
            async move {
                let mut spec =
                    lxd::InstanceSpec::new(&name, lxd::ImageSource::Alias(image.to_owned()))
                        .profiles(profiles.iter().cloned())
                        .ephemeral()
                        .started();
                if let Some(member) = member {
                    spec = spec.target(member);
                }
                (|| async {
                    let created = lxd.create_instance(&spec).await;
                    if let Err(e) = &created {
                        eprintln!("floor: launching {name} failed: {e}");
                        lxd.force_delete_instance(&name).await.ok();
                    }
                    created
                })
                .retry(
                    backon::ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_times(2),
                )
                .await
                .with_context(|| format!("floor: launching {name}"))?;
                let out = lxd
                    .exec(
                        &name,
                        &lxd::ExecRequest::new(["true"]).timeout(exec_timeout),
                    )
                    .await
                    .with_context(|| format!("floor: exec in {name}"))?;
                anyhow::ensure!(out.success(), "floor: exec in {name} failed");
                Ok(())
            }
        });
        for result in join_all(launches).await {
            result?;
        }
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_phases() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(median(&[d(3), d(1), d(2)]), d(2));
        assert_eq!(median(&[]), Duration::ZERO);
        let shell = |purpose| ExecRequest::shell("true", d(1)).for_purpose(purpose);
        assert_eq!(
            exec_phase(&shell(ExecPurpose::Setup)),
            "setup exec (unpack, register, start)"
        );
        assert_eq!(exec_phase(&shell(ExecPurpose::Probe)), "probe");
        assert_eq!(exec_phase(&shell(ExecPurpose::Quiesce)), "quiesce");
        assert_eq!(exec_phase(&shell(ExecPurpose::Other)), "other");
    }

    #[test]
    fn profile_attributes_gaps_to_the_earlier_phase() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let call = |phase, s, e| Call {
            instance: "r".into(),
            phase,
            start: at(s),
            end: at(e),
        };
        let calls = [
            call("create+start", 100, 600),
            call("push bundle (providers without stdin)", 600, 650),
            call("setup exec (unpack, register, start)", 850, 900),
        ];
        let online = BTreeMap::from([("r".to_owned(), Duration::from_millis(1400))]);
        let p = profile(&calls, &online, t0);
        assert_eq!(p.runners, 1);
        let get = |k| (p.mean[k] * 1000.0).round() as i64;
        assert_eq!(get("before first call (observe, token, slot)"), 100);
        assert_eq!(get("create+start"), 500);
        assert_eq!(get("push bundle (providers without stdin)"), 250);
        assert_eq!(get("setup exec (unpack, register, start)"), 50);
        assert_eq!(get("run.sh alive → online in sim"), 500);
    }
}
