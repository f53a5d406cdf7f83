//! Executor tests on in-memory doubles: the simulated provider and a scripted GitHub registry.
//! They check ordering and accounting; correctness on real Incus is in the end-to-end tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::*;
use crate::events::Metrics;
use crate::install::RUNNER_DIR;
use crate::model::{APP_KEY, UNIT_KEY};
use crate::provider::{JitConfig, Registration};
use crate::sim_provider::{SimLatency, SimProvider, SimRunnerHooks};

const REG_TOKEN: &str = "reg-token-s3cr3t";
const JIT_PREFIX: &str = "jit-s3cr3t-";

#[derive(Default)]
struct RegistryState {
    runners: BTreeMap<u64, Registration>,
    next_id: u64,
    /// Names that get a job assigned when their DELETE arrives (the race hook).
    assign_on_delete: BTreeSet<String>,
    fail_list: bool,
    fail_delete: bool,
    /// `(name, instance existed at that moment)` per DELETE.
    deletes: Vec<(String, bool)>,
    /// Runners whose instance runs a job (what `guest/job-check.sh` would find).
    jobs_inside: BTreeSet<String>,
}

#[derive(Default)]
struct FakeRegistry {
    state: Mutex<RegistryState>,
    provider: OnceLock<Arc<SimProvider>>,
}

impl FakeRegistry {
    fn add(&self, name: &str, online: bool, busy: bool) -> u64 {
        let mut s = self.state.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.runners.insert(
            id,
            Registration {
                id,
                name: name.to_owned(),
                online,
                busy,
                labels: Vec::new(),
            },
        );
        id
    }

    fn set_busy(&self, name: &str) {
        for r in self.state.lock().runners.values_mut() {
            if r.name == name {
                r.busy = true;
            }
        }
    }

    /// GitHub stops hearing from the runner: it shows offline.
    fn set_offline(&self, name: &str) {
        for r in self.state.lock().runners.values_mut() {
            if r.name == name {
                r.online = false;
            }
        }
    }

    /// GitHub drops an ephemeral runner's registration after its job.
    fn deregister(&self, name: &str) {
        self.state.lock().runners.retain(|_, r| r.name != name);
    }

    fn names(&self) -> BTreeSet<String> {
        self.state
            .lock()
            .runners
            .values()
            .map(|r| r.name.clone())
            .collect()
    }
}

#[async_trait]
impl RunnerRegistry for FakeRegistry {
    async fn list_runners(&self) -> Result<Vec<Registration>, RegistryError> {
        let s = self.state.lock();
        if s.fail_list {
            return Err(RegistryError::failed("listing runners", "simulated 502"));
        }
        Ok(s.runners.values().cloned().collect())
    }

    async fn registration_token(&self) -> Result<Secret, RegistryError> {
        Ok(Secret::new(REG_TOKEN))
    }

    async fn remove_token(&self) -> Result<Secret, RegistryError> {
        Ok(Secret::new("remove-token-s3cr3t"))
    }

    async fn generate_jit(
        &self,
        name: &RunnerName,
        _labels: &[String],
    ) -> Result<JitConfig, RegistryError> {
        let id = self.add(name.as_str(), false, false);
        Ok(JitConfig {
            runner_id: id,
            encoded: Secret::new(format!("{JIT_PREFIX}{id}")),
        })
    }

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError> {
        let provider = self.provider.get().cloned();
        let mut s = self.state.lock();
        if s.fail_delete {
            return Err(RegistryError::failed("deleting a runner", "simulated 502"));
        }
        let Some(r) = s.runners.get(&id).cloned() else {
            return Ok(DeleteOutcome::NotFound);
        };
        let existed = provider.is_some_and(|p| p.instance(&r.name).is_some());
        s.deletes.push((r.name.clone(), existed));
        if s.assign_on_delete.remove(&r.name) {
            if let Some(r) = s.runners.get_mut(&id) {
                r.busy = true;
            }
            return Ok(DeleteOutcome::Busy);
        }
        if r.busy {
            return Ok(DeleteOutcome::Busy);
        }
        s.runners.remove(&id);
        Ok(DeleteOutcome::Deleted)
    }

    async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, RegistryError> {
        Ok(vec![RunnerDownload {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: "http://127.0.0.1:9/x.tgz".into(),
            filename: "x.tgz".into(),
            sha256: "00".into(),
            temp_download_token: None,
        }])
    }
}

#[async_trait]
impl SimRunnerHooks for FakeRegistry {
    async fn configure(&self, name: &str, _labels: &str, token: &str) -> bool {
        if token != REG_TOKEN {
            return false;
        }
        self.add(name, true, false);
        true
    }

    async fn start(&self, name: &str, jit: Option<&str>) -> bool {
        if let Some(jit) = jit {
            if !jit.starts_with(JIT_PREFIX) {
                return false;
            }
        }
        for r in self.state.lock().runners.values_mut() {
            if r.name == name {
                r.online = true;
            }
        }
        true
    }

    async fn stop(&self, name: &str) {
        // An ephemeral runner that reports its cancelled job is deregistered by GitHub.
        self.state.lock().runners.retain(|_, r| r.name != name);
    }

    async fn job_running(&self, name: &str) -> bool {
        self.state.lock().jobs_inside.contains(name)
    }
}

struct World {
    manager: RunnerManager,
    provider: Arc<SimProvider>,
    registry: Arc<FakeRegistry>,
    _dir: tempfile::TempDir,
    events_log: PathBuf,
}

fn resources() -> Resources {
    Resources::new(2, "7GiB", "10GiB").expect("valid")
}

fn world_with(
    app: &str,
    unit: u32,
    edit: impl FnOnce(&mut ManagerConfig),
    with_binary: bool,
) -> World {
    world_on(app, unit, edit, with_binary, |p| p)
}

/// [`world_with`] on a simulated provider adjusted by `provider`.
fn world_on(
    app: &str,
    unit: u32,
    edit: impl FnOnce(&mut ManagerConfig),
    with_binary: bool,
    provider: impl FnOnce(SimProvider) -> SimProvider,
) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Arc::new(FakeRegistry::default());
    let provider = Arc::new(provider(SimProvider::new(
        SimLatency::default(),
        Some(registry.clone() as Arc<dyn SimRunnerHooks>),
    )));
    assert!(registry.provider.set(provider.clone()).is_ok());
    let mut config = ManagerConfig::new(
        GitHubPath::parse("octo/repo", "").expect("valid"),
        "http://127.0.0.1:8000",
        "jammy",
        dir.path(),
    );
    let events_log = dir.path().join("events.log");
    config.events_log = events_log.clone();
    edit(&mut config);
    if with_binary {
        let bin_dir = dir.path().join("runner-binary");
        std::fs::create_dir_all(&bin_dir).expect("mkdir");
        let tarball = crate::runner_bin::tests::good_tarball();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tarball));
        std::fs::write(bin_dir.join(format!("runner-{sha}.tar.gz")), &tarball).expect("write");
        let current =
            serde_json::json!({"filename": "r.tgz", "download_url": "http://x", "sha256": sha});
        std::fs::write(bin_dir.join("current.json"), current.to_string()).expect("write");
    }
    let mut prometheus = prometheus_client::registry::Registry::default();
    let backends = Backends {
        provider: provider.clone(),
        registry: registry.clone(),
        metrics: Metrics::new(&mut prometheus),
    };
    let proxies = ProxySettings {
        http: Some("http://proxy:3128".parse().expect("valid")),
        https: None,
        no_proxy: None,
    };
    let manager = RunnerManager::new(app, unit, config, &proxies, backends)
        .expect("manager")
        .with_clock(|| 12345);
    World {
        manager,
        provider,
        registry,
        _dir: dir,
        events_log,
    }
}

fn world() -> World {
    world_with("app", 0, |_| {}, true)
}

impl World {
    /// The runner process dies; GitHub, no longer hearing from it, shows it offline.
    fn runner_dies(&self, name: &str) {
        self.provider.kill_runner(name);
        self.registry.set_offline(name);
    }

    /// An ephemeral runner ends after its job; GitHub drops its registration.
    fn runner_finishes(&self, name: &str) {
        self.provider.finish_runner(name);
        self.registry.deregister(name);
    }

    async fn reconcile(&self, quantity: usize) -> ReconcileReport {
        self.manager
            .reconcile(quantity, &resources())
            .await
            .expect("reconcile")
    }

    fn owned_instances(&self) -> BTreeSet<String> {
        self.provider
            .instance_names()
            .into_iter()
            .filter(|n| self.manager.owner().parse_name(n).is_some())
            .collect()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    /// Every registration delete happened while its instance (if any) still existed.
    fn assert_registration_first(&self) {
        let deletes = self.registry.state.lock().deletes.clone();
        let calls = self.provider.calls();
        for (name, existed) in deletes {
            let had_instance = calls.iter().any(|c| *c == format!("create {name}"));
            if had_instance {
                assert!(existed, "instance {name} deleted before its registration");
            }
        }
    }
}

#[tokio::test]
async fn reconcile_from_empty_then_steady() {
    let w = world();
    let first = w.reconcile(2).await;
    assert_eq!(first.delta, 2);
    assert_eq!(first.created.len(), 2);
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    assert_eq!(w.owned_instances().len(), 2);
    assert_eq!(w.registry.names().len(), 2);
    let info = w.manager.get_github_info().await.expect("info");
    assert!(info.iter().all(|r| r.status() == "online" && !r.busy));

    let calls_before = w.provider.calls().len();
    let second = w.reconcile(2).await;
    assert_eq!(second.delta, 0);
    assert!(second.created.is_empty() && second.removed.is_empty());
    assert_eq!(
        w.provider.calls().len(),
        calls_before,
        "second pass changed something"
    );

    // Instances carry ownership keys and the resource profile, never secrets.
    for name in w.owned_instances() {
        let i = w.provider.instance(&name).expect("instance");
        assert_eq!(i.config.get(APP_KEY).map(String::as_str), Some("app"));
        assert_eq!(i.config.get(UNIT_KEY).map(String::as_str), Some("0"));
        assert_eq!(i.profiles, vec!["default", "cpu-2-mem-7GiB-disk-10GiB"]);
        assert!(!format!("{:?}", i.config).contains("s3cr3t"));
        assert!(
            i.files.keys().all(|p| !p.contains("token")),
            "token file left: {:?}",
            i.files.keys()
        );
        let env = String::from_utf8_lossy(&i.files[&format!("{RUNNER_DIR}/.env")].0).into_owned();
        assert!(
            env.contains("http_proxy=http://proxy:3128\nHTTP_PROXY=http://proxy:3128\n"),
            "{env}"
        );
    }
    assert_no_secret_in_execs(&w);
}

/// The install is one exec with the bundle on its standard input; a provider that cannot feed
/// stdin gets the bundle pushed first, then the same exec without input. Both come up.
#[tokio::test]
async fn install_feeds_the_bundle_on_stdin_or_pushes_it() {
    for stdin in [true, false] {
        let w = world_on(
            "app",
            0,
            |_| {},
            true,
            |p| {
                if stdin {
                    p
                } else {
                    p.without_stdin()
                }
            },
        );
        let report = w.reconcile(2).await;
        assert_eq!(
            report.created.len(),
            2,
            "stdin {stdin}: {:?}",
            report.failed
        );
        let setups: Vec<_> = w
            .provider
            .execs()
            .into_iter()
            .filter(|e| e.argv.join(" ").contains(crate::install::BUNDLE_PATH))
            .collect();
        assert_eq!(setups.len(), 2, "one setup exec per runner");
        for e in &setups {
            assert_eq!(e.stdin.is_some(), stdin, "{e:?}");
            assert!(e.stdin.is_none_or(|n| n > 1024), "the bundle: {e:?}");
        }
        assert_eq!(
            w.provider.execs().len(),
            2,
            "stdin {stdin}: nothing but the setup exec ran"
        );
        let info = w.manager.get_github_info().await.expect("info");
        assert!(info.iter().all(|r| r.status() == "online"), "{info:?}");
        assert_no_secret_in_execs(&w);
    }
}

fn assert_no_secret_in_execs(w: &World) {
    for e in w.provider.execs() {
        let all = format!("{:?} {:?}", e.argv, e.env);
        assert!(
            !all.contains("s3cr3t"),
            "secret on a command line or env: {all}"
        );
    }
}

/// A pass waits while another process holds the unit's pass lock (here: the lock file locked
/// through a second open file description, as another process's would be), then runs.
#[tokio::test]
async fn passes_wait_for_another_process_holding_the_unit_lock() {
    let w = world();
    let path = w.manager.pass_lock_path();
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let other = std::fs::File::create(&path).expect("lock file");
    other.lock().expect("lock");
    let resources = resources();
    let pass = w.manager.reconcile(1, &resources);
    tokio::pin!(pass);
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut pass).await;
    assert!(waited.is_err(), "the pass ran while the lock was held");
    assert!(w.provider.calls().is_empty(), "{:?}", w.provider.calls());
    let flush = tokio::time::timeout(
        Duration::from_millis(300),
        w.manager.flush(FlushMode::IdleOnly),
    )
    .await;
    assert!(flush.is_err(), "the flush ran while the lock was held");
    drop(other);
    let report = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("the pass runs once the lock is free")
        .expect("reconcile");
    assert_eq!(report.created.len(), 1);
    // Released after the pass: the next one does not wait.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        w.manager.flush(FlushMode::IdleOnly),
    )
    .await
    .expect("not blocked")
    .expect("flush");
    assert_eq!(again.removed.len(), 1);
}

#[tokio::test]
async fn missing_binary_refuses_and_touches_nothing() {
    let w = world_with("app", 0, |_| {}, false);
    assert!(!w.manager.check_runner_bin());
    let err = w
        .manager
        .reconcile(2, &resources())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, ManagerError::MissingRunnerBinary), "{err}");
    assert!(err.to_string().contains("no runner binary"));
    assert!(w.provider.calls().is_empty());
    assert!(w.provider.execs().is_empty());
}

#[tokio::test]
async fn scale_down_keeps_busy_and_removes_idle_registration_first() {
    let w = world();
    let created = w.reconcile(2).await.created;
    w.registry.set_busy(created[0].as_str());
    let report = w.reconcile(1).await;
    assert_eq!(report.delta, -1);
    assert_eq!(
        report.removed,
        vec![(created[1].clone(), RemovalReason::ScaleDown)]
    );
    assert_eq!(
        w.owned_instances(),
        BTreeSet::from([created[0].to_string()])
    );
    w.assert_registration_first();
}

#[tokio::test]
async fn job_assigned_during_delete_is_never_killed() {
    for _ in 0..20 {
        let w = world();
        let created = w.reconcile(1).await.created;
        w.registry
            .state
            .lock()
            .assign_on_delete
            .insert(created[0].to_string());
        let report = w.reconcile(0).await;
        assert_eq!(report.skipped_busy, created);
        assert!(report.removed.is_empty());
        assert_eq!(
            w.owned_instances().len(),
            1,
            "busy runner's instance deleted"
        );
        assert!(w
            .provider
            .instance(created[0].as_str())
            .is_some_and(|i| i.runner_alive));
    }
}

#[tokio::test]
async fn dead_runner_is_replaced() {
    let w = world();
    let created = w.reconcile(2).await.created;
    w.runner_dies(created[0].as_str());
    let report = w.reconcile(2).await;
    assert_eq!(report.delta, 1);
    assert_eq!(
        report.removed,
        vec![(created[0].clone(), RemovalReason::ProcessDead)]
    );
    assert_eq!(report.created.len(), 1);
    assert_eq!(w.owned_instances().len(), 2);
    assert!(w.provider.instance(created[0].as_str()).is_none());
    assert!(!w.registry.names().contains(created[0].as_str()));
}

#[tokio::test]
async fn dangling_and_orphans_cleaned_foreign_untouched() {
    let w = world_with("foo", 1, |_| {}, true);
    let keys = |app: &str, unit: &str| {
        BTreeMap::from([
            (APP_KEY.to_owned(), app.to_owned()),
            (UNIT_KEY.to_owned(), unit.to_owned()),
        ])
    };
    let old = std::time::Duration::from_secs(3600);
    // Orphan: ours, no registration, past the grace period.
    w.provider
        .add_instance("foo-1-orphan00", keys("foo", "1"), old);
    // Not ours: app foo-1 unit 0 (prefix collides), unlabelled, other unit.
    w.provider
        .add_instance("foo-1-0-abcdefgh", keys("foo-1", "0"), old);
    w.provider
        .add_instance("foo-1-unlabel0", BTreeMap::new(), old);
    w.provider
        .add_instance("foo-2-abcdefgh", keys("foo", "2"), old);
    // Dangling registration: ours, no instance. Foreign registrations stay.
    w.registry.add("foo-1-dangling", false, false);
    w.registry.add("foo-1-0-abcdefgh", true, false);
    w.registry.add("foo-1-unlabel0x", false, false);

    let report = w.reconcile(0).await;
    let removed: BTreeMap<String, RemovalReason> = report
        .removed
        .iter()
        .map(|(n, r)| (n.to_string(), *r))
        .collect();
    assert_eq!(
        removed,
        BTreeMap::from([
            ("foo-1-dangling".to_owned(), RemovalReason::Dangling),
            ("foo-1-orphan00".to_owned(), RemovalReason::Orphan),
        ])
    );
    // The unlabelled "foo-1-unlabel0" has our name form but no keys: not ours, untouched.
    assert_eq!(
        w.provider
            .instance_names()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "foo-1-0-abcdefgh".into(),
            "foo-1-unlabel0".into(),
            "foo-2-abcdefgh".into()
        ])
    );
    assert_eq!(
        w.registry.names(),
        BTreeSet::from(["foo-1-0-abcdefgh".into(), "foo-1-unlabel0x".into()])
    );
}

#[tokio::test]
async fn failed_creation_is_cleaned_and_others_come_up() {
    let w = world_with("app", 0, |c| c.create_concurrency = 1, true);
    w.provider.fail_next_configures(1);
    let report = w.reconcile(3).await;
    assert_eq!(report.created.len(), 2);
    assert_eq!(report.failed.len(), 1);
    let failure = &report.failed[0];
    assert_eq!(failure.action, "create");
    assert!(failure.error.contains("config.sh"), "{}", failure.error);
    let failed_name = failure.runner.clone().expect("runner");
    assert!(w.provider.instance(failed_name.as_str()).is_none());
    assert!(!w.registry.names().contains(failed_name.as_str()));
    assert_eq!(w.owned_instances().len(), 2);

    // Failed starts are retried, up to three attempts; three in a row fail that runner only.
    w.provider.fail_next_creates(2);
    let report = w.reconcile(3).await;
    assert_eq!(
        (report.created.len(), report.failed.len()),
        (1, 0),
        "{report:?}"
    );
    w.provider.fail_next_creates(3);
    let report = w.reconcile(5).await;
    assert_eq!((report.created.len(), report.failed.len()), (1, 1));
    assert!(report.failed[0].error.contains("creating instance"));
    assert_eq!(w.owned_instances().len(), 4);
    let deletes = w
        .provider
        .calls()
        .iter()
        .filter(|c| c.starts_with("delete "))
        .count();
    assert!(deletes >= 5, "each failed attempt is removed: {deletes}");
}

#[tokio::test]
async fn github_failure_touches_nothing() {
    let w = world();
    w.reconcile(2).await;
    let calls = w.provider.calls().len();
    w.registry.state.lock().fail_list = true;
    let err = w
        .manager
        .reconcile(0, &resources())
        .await
        .expect_err("list fails");
    assert!(err.to_string().contains("listing github runners"), "{err}");
    assert_eq!(w.provider.calls().len(), calls);
    assert_eq!(w.owned_instances().len(), 2);
}

#[tokio::test]
async fn github_failure_mid_pass_keeps_instances_and_reports() {
    let w = world();
    let created = w.reconcile(3).await.created;
    w.runner_dies(created[0].as_str());
    w.registry.state.lock().fail_delete = true;
    let report = w.reconcile(2).await;
    // The dead runner could not be unregistered: its instance stays, the healthy ones too.
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].runner.as_ref(), Some(&created[0]));
    assert!(report
        .failed
        .iter()
        .all(|f| f.action == "remove" && f.error.contains("deleting github registration")));
    assert_eq!(w.owned_instances().len(), 3);
    // The next pass, with GitHub back, converges.
    w.registry.state.lock().fail_delete = false;
    let report = w.reconcile(2).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(w.owned_instances().len(), 2);
    assert!(!w.owned_instances().contains(created[0].as_str()));
}

#[tokio::test]
async fn finished_runner_is_not_a_crash() {
    let w = world_with("app", 0, |c| c.issue_metrics = true, true);
    let created = w.reconcile(1).await.created;
    w.runner_finishes(created[0].as_str());
    let report = w.reconcile(1).await;
    assert_eq!(
        report.removed,
        vec![(created[0].clone(), RemovalReason::Finished)]
    );
    let last = w.events().pop().expect("reconciliation event");
    assert_eq!(last["event"], "reconciliation");
    assert_eq!(last["crashed_runners"], 0);
}

#[tokio::test]
async fn flush_counts_and_modes() {
    let w = world();
    let created = w.reconcile(3).await.created;
    w.registry.set_busy(created[0].as_str());
    w.registry.add("app-0-dangling", false, false);

    let idle = w.manager.flush(FlushMode::IdleOnly).await.expect("flush");
    assert_eq!(idle.removed.len(), 3, "{idle:?}");
    assert!(idle.failed.is_empty());
    assert_eq!(
        w.owned_instances(),
        BTreeSet::from([created[0].to_string()])
    );

    let busy = w
        .manager
        .flush(FlushMode::IncludingBusy)
        .await
        .expect("flush");
    assert_eq!(busy.removed, vec![created[0].clone()]);
    assert!(w.owned_instances().is_empty());
    assert!(w.registry.names().is_empty());
    w.assert_registration_first();

    let empty = w
        .manager
        .flush(FlushMode::IncludingBusy)
        .await
        .expect("flush");
    assert_eq!(empty, FlushReport::default());
    assert_no_secret_in_execs(&w);
}

#[tokio::test]
async fn jit_mode_creates_without_config_sh() {
    let w = world_with(
        "app",
        0,
        |c| c.registration_mode = RegistrationMode::Jit,
        true,
    );
    let report = w.reconcile(2).await;
    assert_eq!(report.created.len(), 2, "{:?}", report.failed);
    let info = w.manager.get_github_info().await.expect("info");
    assert_eq!(info.len(), 2);
    assert!(info.iter().all(|r| r.online));
    assert!(w
        .provider
        .execs()
        .iter()
        .all(|e| !format!("{:?}", e.argv).contains("./config.sh")));
    for name in w.owned_instances() {
        let i = w.provider.instance(&name).expect("instance");
        assert!(
            !i.files.contains_key(&format!("{RUNNER_DIR}/.jitconfig")),
            "jit file not deleted"
        );
    }
    assert_no_secret_in_execs(&w);
    assert_eq!(w.reconcile(2).await.delta, 0);
}

#[tokio::test]
async fn metrics_events_for_a_full_cycle() {
    let w = world_with("app", 0, |c| c.issue_metrics = true, true);
    let created = w.reconcile(1).await.created;
    let name = created[0].as_str();
    w.provider.write_file(name, INSTALLED_FILE, "1000\n");
    w.provider.write_file(
        name,
        PRE_JOB_FILE,
        r#"{"timestamp":1010,"workflow":"ci","repo":"octo/repo","github_event":"push"}"#,
    );
    w.provider.write_file(
        name,
        POST_JOB_FILE,
        r#"{"timestamp":1070,"status":"normal"}"#,
    );
    w.runner_dies(name);
    w.reconcile(0).await;
    let events = w.events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "runner_installed",
            "reconciliation",
            "runner_start",
            "runner_stop",
            "reconciliation"
        ]
    );
    assert_eq!(
        events[0],
        serde_json::json!({"event":"runner_installed","timestamp":12345,"flavor":"app","duration":0})
    );
    assert_eq!(
        events[2],
        serde_json::json!({"event":"runner_start","timestamp":1010,"flavor":"app","workflow":"ci","repo":"octo/repo","github_event":"push","idle":10})
    );
    assert_eq!(
        events[3],
        serde_json::json!({"event":"runner_stop","timestamp":1070,"flavor":"app","workflow":"ci","repo":"octo/repo","github_event":"push","status":"normal","job_duration":60})
    );
    assert_eq!(events[4]["crashed_runners"], 1);
    assert_eq!(events[4]["idle_runners"], 0);
}

#[tokio::test]
async fn metrics_off_writes_no_events() {
    let w = world();
    w.reconcile(1).await;
    assert!(w.events().is_empty());
}

#[tokio::test]
async fn latest_runner_bin_url() {
    let w = world();
    let d = w
        .manager
        .get_latest_runner_bin_url("linux", "x64")
        .await
        .expect("found");
    assert_eq!(d.filename, "x.tgz");
    let err = w
        .manager
        .get_latest_runner_bin_url("linux", "arm64")
        .await
        .expect_err("none");
    assert!(matches!(err, ManagerError::NoMatchingDownload { .. }));
}

#[test]
fn job_events_statuses() {
    let pre =
        Some(r#"{"timestamp":100,"workflow":"w","repo":"o/r","github_event":"push"}"#.to_owned());
    let none = JobRecords::default();
    assert!(job_events("n", &none, 500).is_none());
    let abnormal = JobRecords {
        pre_job: pre.clone(),
        ..JobRecords::default()
    };
    let (start, stop) = job_events("n", &abnormal, 500).expect("events");
    assert_eq!(
        (start.idle, stop.status.as_str(), stop.job_duration),
        (0, "abnormal", 400)
    );
    let refused = JobRecords {
        pre_job: pre,
        policy_refused: true,
        installed_at: Some("90\n".into()),
        ..JobRecords::default()
    };
    let (start, stop) = job_events("n", &refused, 130).expect("events");
    assert_eq!(start.idle, 10);
    assert_eq!(stop.status, "repo-policy-check-failure");
}

/// An idle pass over a healthy fleet makes no exec: runners GitHub reports online are alive.
#[tokio::test]
async fn idle_pass_makes_no_exec() {
    let w = world();
    let created = w.reconcile(3).await.created;
    assert_eq!(created.len(), 3);
    let before = w.provider.exec_count();
    let report = w.reconcile(3).await;
    assert!(
        report.created.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        w.provider.exec_count(),
        before,
        "an idle pass probed instances"
    );
    // A runner GitHub no longer hears from is probed, and found dead.
    w.runner_dies(created[1].as_str());
    let report = w.reconcile(3).await;
    assert_eq!(
        report.removed,
        vec![(created[1].clone(), RemovalReason::ProcessDead)]
    );
    let probes = w
        .provider
        .execs()
        .iter()
        .filter(|e| e.argv.join(" ").contains("RM_EXIT_FILE"))
        .filter(|e| e.instance != created[1].as_str())
        .count();
    assert_eq!(probes, 0, "only the offline runner is probed");
}

/// GitHub's busy flag can read false while a job runs: before a scale-down deregisters a runner,
/// the manager looks inside its instance, and a job there keeps it.
#[tokio::test]
async fn scale_down_keeps_a_runner_with_a_job_inside() {
    let w = world();
    let created = w.reconcile(3).await.created;
    w.registry
        .state
        .lock()
        .jobs_inside
        .insert(created[0].to_string());
    let before = w.provider.exec_count();
    let report = w.reconcile(0).await;
    assert_eq!(report.skipped_busy, vec![created[0].clone()], "{report:?}");
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(w.provider.instance(created[0].as_str()).is_some());
    assert!(w.registry.names().contains(created[0].as_str()));
    // One look per removal candidate, nothing else.
    assert_eq!(w.provider.exec_count() - before, 3);
    assert!(!w
        .registry
        .state
        .lock()
        .deletes
        .iter()
        .any(|(name, _)| name == created[0].as_str()));
}

/// The same for an idle-only flush; a flush of busy runners stops them regardless.
#[tokio::test]
async fn idle_flush_keeps_a_runner_with_a_job_inside() {
    let w = world();
    let created = w.reconcile(2).await.created;
    w.registry
        .state
        .lock()
        .jobs_inside
        .insert(created[1].to_string());
    let report = w.manager.flush(FlushMode::IdleOnly).await.expect("flush");
    assert_eq!(report.removed, vec![created[0].clone()]);
    assert_eq!(report.skipped_busy, vec![created[1].clone()]);
    assert!(w.provider.instance(created[1].as_str()).is_some());
}

#[test]
fn only_healthy_removals_look_inside() {
    use RemovalReason as R;
    for (reason, mode, looks) in [
        (R::ScaleDown, FlushMode::IdleOnly, true),
        (R::Flush, FlushMode::IdleOnly, true),
        (R::Flush, FlushMode::IncludingBusy, false),
        (R::ProcessDead, FlushMode::IdleOnly, false),
        (R::Offline, FlushMode::IdleOnly, false),
        (R::Orphan, FlushMode::IdleOnly, false),
        (R::Dangling, FlushMode::IdleOnly, false),
        (R::Finished, FlushMode::IdleOnly, false),
    ] {
        assert_eq!(needs_job_check(reason, mode), looks, "{reason:?} {mode:?}");
    }
}
