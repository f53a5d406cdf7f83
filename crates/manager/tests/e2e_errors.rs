//! Permanent LXD errors end to end, on real Incus and the GitHub simulator: a missing image alias
//! or profile fails the pass once, clearly (naming it, the server, and how to list what is
//! there), before any registration or instance is made, and a permanent error met at create
//! time is never retried. Ignored without Incus (a plain `cargo test` lists them as ignored);
//! `scripts/test.sh` runs them.
//!
//! Every test uses its own app name (`e2eerr…`): its instances and registrations start with it,
//! and a failing test deletes its instances on the way out.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use github_sim::SimHandle;
use manager::adapters::{GitHubRegistry, LxdProvider};
use manager::events::Metrics;
use manager::model::{InstanceType, Owner, APP_KEY};
use manager::plan::RemovalReason;
use manager::provider::{
    ExecOutput, ExecRequest, FilePush, Instance, InstanceProvider, InstanceSpec, JitRequest,
    ProviderError, RunnerRegistry,
};
use manager::{Backends, FlushMode, RegistrationMode, Resources, RunnerManager};
use test_support::incus::{delete_prefixed, random_app};
use test_support::incus_ignored;

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
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

/// A manager made by [`Env::manager`], its provider and its state directory.
struct Unit {
    manager: RunnerManager,
    provider: Arc<Counting>,
    _state: tempfile::TempDir,
}

impl Unit {
    /// One pass for `quantity` runners, which must run (it may report failures).
    async fn reconcile(&self, quantity: usize) -> manager::ReconcileReport {
        common::reconcile(&self.manager, quantity).await
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
        let sim = common::start_sim().await;
        let lxd = lxd::Client::discover().await.expect("incus is up");
        let github = common::github_client(&sim);
        let app = random_app("e2eerr", 6);
        Env {
            owner: Owner::new(&app, 0).expect("owner"),
            app,
            sim,
            registry: Arc::new(GitHubRegistry::new(github, None, None)),
            lxd,
        }
    }

    /// A manager of this app's unit 0 with its own state directory, on a [`Counting`] provider
    /// (`preflight`, `profile`: see there), with its runner binary in place.
    async fn manager(
        &self,
        image: &str,
        mode: RegistrationMode,
        preflight: bool,
        profile: Option<String>,
    ) -> Unit {
        let state = tempfile::tempdir().expect("tempdir");
        let provider = Arc::new(Counting {
            inner: LxdProvider::new(self.lxd.clone()),
            creates: AtomicUsize::new(0),
            preflight,
            profile,
        });
        let mut config = common::manager_config(&self.sim, image, state.path());
        config.registration_mode = mode;
        let mut prometheus = prometheus_client::registry::Registry::default();
        let backends = Backends {
            provider: provider.clone(),
            registry: self.registry.clone(),
            metrics: Metrics::new(&mut prometheus),
        };
        let proxies = common::proxies_on_the_bridge();
        let manager =
            RunnerManager::new(&self.app, 0, config, &proxies, backends).expect("manager");
        common::install_runner_bin(&manager).await;
        Unit {
            manager,
            provider,
            _state: state,
        }
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

/// Every one of `parts` is in `error`.
fn assert_names(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "{part:?} not in {error:?}");
    }
}

/// A missing image alias: one error, naming the alias and the server and saying how to list the
/// images, before anything is registered or created. A healthy runner is left alone and a
/// dangling registration is still removed in that pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn a_missing_image_fails_the_pass_once_before_anything_is_made() {
    let env = Env::new().await;
    let healthy = env
        .manager("busybox", RegistrationMode::Token, true, None)
        .await;
    let first = healthy.reconcile(1).await;
    assert_eq!(first.created.len(), 1, "{:?}", first.failed);
    common::wait_online(&healthy.manager, 1).await;
    // A registration without an instance: the pass removes it.
    let dangling = env.owner.new_runner_name();
    env.registry
        .generate_jit(&JitRequest {
            name: dangling.clone(),
            labels: vec![env.app.clone()],
            group: None,
        })
        .await
        .expect("dangling registration");

    let alias = format!("{}-nosuch", env.app);
    let broken = env
        .manager(&alias, RegistrationMode::Token, true, None)
        .await;
    let issued = env.registrations_issued();
    let report = broken.reconcile(3).await;
    let error = prepare_error(&report);
    eprintln!("the operator reads: {error}");
    assert_names(
        error,
        &[
            &format!("image alias \"{alias}\" not found"),
            &format!("on Incus {}", env.lxd.server().version),
            env.lxd.endpoint(),
            "`incus image list`",
        ],
    );
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(
        broken.provider.creates(),
        0,
        "no instance creation was attempted"
    );
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
        .manager
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
        let unit = env
            .manager("busybox", mode, true, Some(profile.clone()))
            .await;
        let issued = env.registrations_issued();
        let report = unit.reconcile(2).await;
        let error = prepare_error(&report);
        eprintln!("the operator reads ({mode:?}): {error}");
        let missing = format!("profile \"{profile}\" not found");
        assert_names(error, &[&missing, "on Incus", "`incus profile list`"]);
        assert_eq!(unit.provider.creates(), 0, "{mode:?}");
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
        let unit = env
            .manager(image, RegistrationMode::Jit, false, profile)
            .await;
        let report = unit.reconcile(1).await;
        assert_eq!(report.failed.len(), 1, "{:#?}", report.failed);
        let failure = &report.failed[0];
        eprintln!("the operator reads: {}", failure.error);
        assert_eq!(failure.action, "create", "{failure:?}");
        assert_names(&failure.error, &[&missing, listing]);
        assert_eq!(
            unit.provider.creates(),
            1,
            "exactly one attempt: {failure:?}"
        );
        assert!(env.instances().await.is_empty());
        // The JIT registration made meanwhile was removed with the failed runner.
        assert!(env.registrations().is_empty(), "{:?}", env.registrations());
    }
}
