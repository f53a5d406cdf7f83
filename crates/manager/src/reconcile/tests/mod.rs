//! Executor tests on in-memory doubles: the simulated provider and a scripted GitHub registry.
//! They check ordering and accounting; correctness on real Incus is in the end-to-end tests.
//! The doubles and the `World` live here; `pass.rs` tests whole passes, `remove.rs` removals.

mod cluster;
mod images;
mod pass;
mod pools;
mod remove;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::*;
use crate::events::Metrics;
use crate::guest::{INSTALLED_FILE, POST_JOB_FILE, PRE_JOB_FILE};
use crate::install::RUNNER_DIR;
use crate::model::Secret;
use crate::model::{APP_KEY, UNIT_KEY};
use crate::provider::DeleteOutcome;
use crate::provider::{JitConfig, JitRequest, Registration};
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
    /// DELETEs fail as a refused connection does (the OS error, under the client's words).
    fail_delete: bool,
    /// Registration tokens are refused as with bad credentials, GitHub's message kept.
    refuse_token: bool,
    /// `(name, instance existed at that moment)` per DELETE.
    deletes: Vec<(String, bool)>,
    /// Runners whose instance runs a job (what `guest/job-check.sh` would find).
    jobs_inside: BTreeSet<String>,
    /// The runner group each JIT registration asked for, by runner name.
    jit_groups: BTreeMap<String, Option<String>>,
}

#[derive(Default)]
struct FakeRegistry {
    state: Mutex<RegistryState>,
    provider: OnceLock<Arc<SimProvider>>,
}

impl FakeRegistry {
    fn add(&self, name: &str, online: bool, busy: bool) -> u64 {
        self.add_labelled(name, online, busy, Vec::new())
    }

    fn add_labelled(&self, name: &str, online: bool, busy: bool, labels: Vec<String>) -> u64 {
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
                labels,
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

    /// A job runs in `name`'s instance (what `guest/job-check.sh` finds).
    fn job_inside(&self, name: &str) {
        self.state.lock().jobs_inside.insert(name.to_owned());
    }

    /// Whether a DELETE of `name`'s registration came.
    fn was_deleted(&self, name: &str) -> bool {
        self.state.lock().deletes.iter().any(|(n, _)| n == name)
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
        if self.state.lock().refuse_token {
            return Err(RegistryError::Unauthorized {
                what: "creating a registration token".into(),
                source: "github rejected the credentials: Bad credentials".into(),
            });
        }
        Ok(Secret::new(REG_TOKEN))
    }

    async fn generate_jit(&self, request: &JitRequest) -> Result<JitConfig, RegistryError> {
        let id = self.add_labelled(request.name.as_str(), false, false, request.labels.clone());
        self.state
            .lock()
            .jit_groups
            .insert(request.name.to_string(), request.group.clone());
        Ok(JitConfig {
            runner_id: id,
            encoded: Secret::new(format!("{JIT_PREFIX}{id}")),
        })
    }

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError> {
        let provider = self.provider.get().cloned();
        let mut s = self.state.lock();
        if s.fail_delete {
            return Err(RegistryError::Failed {
                what: "deleting a runner".into(),
                source: Box::new(Transport(refused_connection())),
            });
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
    async fn configure(&self, name: &str, labels: &str, token: &str) -> bool {
        if token != REG_TOKEN {
            return false;
        }
        // `config.sh` adds GitHub's default labels to the ones it is given.
        let labels = ["self-hosted", "Linux", "X64"]
            .into_iter()
            .chain(labels.split(',').filter(|l| !l.is_empty()))
            .map(str::to_owned)
            .collect();
        self.add_labelled(name, true, false, labels);
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

/// `app`, unit 0, with its runner hooks; `edit` changes its config.
fn app_world(edit: impl FnOnce(&mut ManagerConfig)) -> World {
    world_with("app", 0, edit, true)
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
    app_world(|_| {})
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

fn assert_no_secret_in_execs(w: &World) {
    for e in w.provider.execs() {
        let all = format!("{:?} {:?}", e.argv, e.env);
        assert!(
            !all.contains("s3cr3t"),
            "secret on a command line or env: {all}"
        );
    }
}

/// What the GitHub client says over a transport failure, its cause kept.
#[derive(Debug, thiserror::Error)]
#[error("request to github failed")]
struct Transport(#[source] std::io::Error);

/// A real refused connection: to a port just freed.
fn refused_connection() -> std::io::Error {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::net::TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens")
}
