//! Permanent LXD errors end to end, on real Incus and the GitHub simulator: a missing image alias
//! or profile fails the pass once, clearly (naming it, the server, and how to list what is
//! there), before any registration or instance is made, and a permanent error met at create
//! time is never retried. Ignored without Incus (a plain `cargo test` lists them as ignored);
//! `scripts/test.sh` runs them.
//!
//! Every test uses its own app name (`e2eerr…`): its instances and registrations start with it,
//! and a failing test deletes its instances on the way out.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use github_sim::SimHandle;
use manager::adapters::{GitHubRegistry, LxdProvider};
use manager::events::Metrics;
use manager::model::{InstanceType, Owner, APP_KEY};
use manager::plan::RemovalReason;
use manager::provider::{
    ExecOutput, ExecRequest, FilePush, Instance, InstanceProvider, InstanceSpec, ProviderError,
    RunnerRegistry,
};
use manager::{
    Backends, FlushMode, GitHubPath, ManagerConfig, ProxySettings, RegistrationMode, Resources,
    RunnerManager,
};
use test_support::incus::{bridge_ip, delete_prefixed, random_app};
use test_support::{incus_ignored, sim};

const REPO: &str = "octo/repo";

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

fn resources() -> Resources {
    Resources::new(1, "256MiB", "1GiB").expect("valid")
}

/// The real LXD provider, counting creation attempts. Without `preflight` it does not forward
/// the checks (the trait's defaults find nothing to check), so a missing object is met at
/// create time. `profile`, when set, is the profile name `ensure_profile` answers (one that
/// does not exist, say).
struct Counting {
    inner: LxdProvider,
    creates: AtomicUsize,
    preflight: bool,
    profile: Option<String>,
}

impl Counting {
    fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl InstanceProvider for Counting {
    async fn list_instances(&self, owner: &Owner) -> Result<Vec<Instance>, ProviderError> {
        self.inner.list_instances(owner).await
    }

    async fn ensure_pool(&self, path: &Path) -> Result<(), ProviderError> {
        self.inner.ensure_pool(path).await
    }

    async fn ensure_profile(
        &self,
        resources: &Resources,
        instance_type: InstanceType,
        with_pool: bool,
    ) -> Result<String, ProviderError> {
        let made = self
            .inner
            .ensure_profile(resources, instance_type, with_pool)
            .await?;
        Ok(self.profile.clone().unwrap_or(made))
    }

    async fn check_image(&self, image: &str) -> Result<(), ProviderError> {
        if self.preflight {
            self.inner.check_image(image).await
        } else {
            Ok(())
        }
    }

    async fn check_profiles(&self, profiles: &[String]) -> Result<(), ProviderError> {
        if self.preflight {
            self.inner.check_profiles(profiles).await
        } else {
            Ok(())
        }
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create_and_start(spec).await
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError> {
        self.inner.exec(name, request).await
    }

    fn streams_stdin(&self) -> bool {
        self.inner.streams_stdin()
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError> {
        self.inner.push_file(name, file).await
    }

    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        self.inner.pull_file(name, path).await
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        self.inner.delete(name).await
    }
}

/// One app on the simulator and the real daemon; deletes its instances if the test fails.
struct Env {
    app: String,
    owner: Owner,
    sim: SimHandle,
    lxd: lxd::Client,
    registry: Arc<GitHubRegistry>,
}

impl Env {
    async fn new() -> Env {
        let sim = sim::start(
            sim::on_bridge(REPO, "2.330.0").with_silence_timeout(Duration::from_secs(10)),
        )
        .await;
        let lxd = lxd::Client::discover().await.expect("incus is up");
        let github = github::Client::new(github::ClientConfig::new(
            url::Url::parse(&sim.api_url()).expect("url"),
            url::Url::parse(&sim.web_url()).expect("url"),
            github::Scope::parse(REPO).expect("scope"),
            github::Auth::Token(github::Secret::new(sim.token().expose())),
        ))
        .expect("github client");
        let app = random_app("e2eerr", 6);
        Env {
            owner: Owner::new(&app, 0).expect("owner"),
            app,
            sim,
            registry: Arc::new(GitHubRegistry::new(github, None, None)),
            lxd,
        }
    }

    fn provider(&self, preflight: bool, profile: Option<String>) -> Arc<Counting> {
        Arc::new(Counting {
            inner: LxdProvider::new(self.lxd.clone()),
            creates: AtomicUsize::new(0),
            preflight,
            profile,
        })
    }

    /// A manager of this app's unit 0 on `provider`, with its runner binary in place.
    async fn manager(
        &self,
        image: &str,
        mode: RegistrationMode,
        provider: Arc<Counting>,
        state: &tempfile::TempDir,
    ) -> RunnerManager {
        let mut config = ManagerConfig::new(
            GitHubPath::parse(REPO, "").expect("path"),
            &self.sim.web_url(),
            image,
            state.path(),
        );
        config.registration_mode = mode;
        config.ready_timeout = Duration::from_secs(60);
        config.boot_grace = Duration::from_secs(60);
        config.events_log = state.path().join("events.log");
        let mut prometheus = prometheus_client::registry::Registry::default();
        let backends = Backends {
            provider,
            registry: self.registry.clone(),
            metrics: Metrics::new(&mut prometheus),
        };
        let proxies = ProxySettings {
            http: Some(
                manager::ProxyUrl::parse(&format!("http://{}:9", bridge_ip())).expect("proxy url"),
            ),
            https: None,
            no_proxy: Some(bridge_ip().to_string()),
        };
        let manager =
            RunnerManager::new(&self.app, 0, config, &proxies, backends).expect("manager");
        let download = manager
            .get_latest_runner_bin_url("linux", "x64")
            .await
            .expect("download listed");
        manager
            .update_runner_bin(&download)
            .await
            .expect("binary verified");
        manager
    }

    async fn instances(&self) -> Vec<String> {
        self.lxd
            .list_instances_with_config(APP_KEY, &self.app)
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    /// This app's registrations on the simulator.
    fn registrations(&self) -> Vec<String> {
        self.sim
            .runners()
            .into_iter()
            .map(|r| r.name)
            .filter(|name| name.starts_with(&format!("{}-", self.app)))
            .collect()
    }

    /// Registration tokens and JIT configs the simulator has handed out.
    fn registrations_issued(&self) -> (usize, usize) {
        let issued = self.sim.issued_secrets();
        (issued.registration_tokens.len(), issued.jit_configs.len())
    }

    async fn wait_online(&self, manager: &RunnerManager, n: usize) {
        for _ in 0..360 {
            let info = manager.get_github_info().await.expect("info");
            if info.iter().filter(|r| r.online).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{n} runners never came online");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        delete_prefixed(&self.lxd, &format!("{}-", self.app));
    }
}

/// The one error a pass reports, which must be the prepare step's.
fn prepare_error(report: &manager::ReconcileReport) -> &str {
    assert_eq!(
        report.failed.len(),
        1,
        "one clear error: {:#?}",
        report.failed
    );
    let failure = &report.failed[0];
    assert_eq!(failure.action, "prepare", "{failure:?}");
    assert_eq!(failure.runner, None, "{failure:?}");
    &failure.error
}

/// A missing image alias: one error, naming the alias and the server and saying how to list the
/// images, before anything is registered or created. A healthy runner is left alone and a
/// dangling registration is still removed in that pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn a_missing_image_fails_the_pass_once_before_anything_is_made() {
    let env = Env::new().await;
    let healthy_state = tempfile::tempdir().expect("tempdir");
    let healthy = env
        .manager(
            "busybox",
            RegistrationMode::Token,
            env.provider(true, None),
            &healthy_state,
        )
        .await;
    let first = healthy.reconcile(1, &resources()).await.expect("reconcile");
    assert_eq!(first.created.len(), 1, "{:?}", first.failed);
    env.wait_online(&healthy, 1).await;
    // A registration without an instance: the pass removes it.
    let dangling = env.owner.new_runner_name();
    env.registry
        .generate_jit(&dangling, std::slice::from_ref(&env.app), None)
        .await
        .expect("dangling registration");

    let alias = format!("{}-nosuch", env.app);
    let provider = env.provider(true, None);
    let state = tempfile::tempdir().expect("tempdir");
    let broken = env
        .manager(&alias, RegistrationMode::Token, provider.clone(), &state)
        .await;
    let issued = env.registrations_issued();
    let report = broken
        .reconcile(3, &resources())
        .await
        .expect("the pass runs");
    let error = prepare_error(&report);
    eprintln!("the operator reads: {error}");
    for part in [
        format!("image alias \"{alias}\" not found"),
        format!("on Incus {}", env.lxd.server().version),
        env.lxd.endpoint().to_owned(),
        "`incus image list`".to_owned(),
    ] {
        assert!(error.contains(&part), "{part:?} not in {error:?}");
    }
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(provider.creates(), 0, "no instance creation was attempted");
    assert_eq!(
        env.registrations_issued(),
        issued,
        "no registration token or JIT config was issued"
    );
    assert_eq!(
        report.removed,
        vec![(dangling.clone(), RemovalReason::Dangling)],
        "the removal of the same pass still happens"
    );
    // Only the healthy runner is left, untouched.
    assert_eq!(env.instances().await, vec![first.created[0].to_string()]);
    assert_eq!(env.registrations(), vec![first.created[0].to_string()]);

    healthy
        .flush(FlushMode::IncludingBusy)
        .await
        .expect("flush");
    assert!(env.instances().await.is_empty(), "instances left behind");
}

/// A missing profile is caught by the same preflight (token and JIT modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn a_missing_profile_fails_the_pass_once_before_anything_is_made() {
    let env = Env::new().await;
    let profile = format!("{}-noprofile", env.app);
    for mode in [RegistrationMode::Token, RegistrationMode::Jit] {
        let provider = env.provider(true, Some(profile.clone()));
        let state = tempfile::tempdir().expect("tempdir");
        let manager = env.manager("busybox", mode, provider.clone(), &state).await;
        let issued = env.registrations_issued();
        let report = manager.reconcile(2, &resources()).await.expect("pass");
        let error = prepare_error(&report);
        eprintln!("the operator reads ({mode:?}): {error}");
        for part in [
            format!("profile \"{profile}\" not found"),
            "on Incus".to_owned(),
            "`incus profile list`".to_owned(),
        ] {
            assert!(error.contains(&part), "{part:?} not in {error:?}");
        }
        assert_eq!(provider.creates(), 0, "{mode:?}");
        assert_eq!(env.registrations_issued(), issued, "{mode:?}");
        assert!(env.registrations().is_empty(), "{mode:?}");
        assert!(env.instances().await.is_empty(), "{mode:?}");
    }
}

/// Met at create time (here: a provider that skips the preflight), a missing image alias or
/// profile fails the runner's creation after exactly one attempt, with the same clear error,
/// and leaves no instance and no registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn a_permanent_create_error_is_not_retried() {
    let env = Env::new().await;
    let alias = format!("{}-nosuch", env.app);
    let profile = format!("{}-noprofile", env.app);
    let cases = [
        (
            alias.as_str(),
            None,
            format!("image alias \"{alias}\" not found"),
            "`incus image list`",
        ),
        (
            "busybox",
            Some(profile.clone()),
            format!("profile \"{profile}\" not found"),
            "`incus profile list`",
        ),
    ];
    for (image, profile, missing, listing) in cases {
        let provider = env.provider(false, profile);
        let state = tempfile::tempdir().expect("tempdir");
        let manager = env
            .manager(image, RegistrationMode::Jit, provider.clone(), &state)
            .await;
        let report = manager.reconcile(1, &resources()).await.expect("pass");
        assert_eq!(report.failed.len(), 1, "{:#?}", report.failed);
        let failure = &report.failed[0];
        eprintln!("the operator reads: {}", failure.error);
        assert_eq!(failure.action, "create", "{failure:?}");
        assert!(failure.error.contains(&missing), "{failure:?}");
        assert!(failure.error.contains(listing), "{failure:?}");
        assert_eq!(provider.creates(), 1, "exactly one attempt: {failure:?}");
        assert!(env.instances().await.is_empty());
        // The JIT registration made meanwhile was removed with the failed runner.
        assert!(env.registrations().is_empty(), "{:?}", env.registrations());
    }
}
