//! What the manager's end-to-end tests share: the simulator's repository and the runners'
//! resources, a manager's GitHub client and config on the simulator, its runner binary, and
//! waiting for runners and jobs.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use github_sim::{JobSpec, JobStatus, JobView, SimHandle};
use manager::{GitHubPath, ManagerConfig, ProxySettings, Resources, RunnerManager};
use test_support::incus::bridge_ip;
use test_support::sim;

/// The repository the simulator serves and the runners register in.
pub const REPO: &str = "octo/repo";

/// The runners' resources: 1 CPU, 256 MiB, a 1 GiB disk.
pub fn resources() -> Resources {
    Resources::new(1, "256MiB", "1GiB").expect("valid")
}

/// The simulator on the Incus bridge, serving the fake runner tarball; a runner silent for
/// 10 s is offline.
pub async fn start_sim() -> SimHandle {
    sim::start(sim::on_bridge(REPO, "2.330.0").with_silence_timeout(Duration::from_secs(10))).await
}

/// A GitHub client of [`REPO`] on `sim`, with its token.
pub fn github_client(sim: &SimHandle) -> github::Client {
    github::Client::new(github::ClientConfig::new(
        url::Url::parse(&sim.api_url()).expect("url"),
        url::Url::parse(&sim.web_url()).expect("url"),
        github::Scope::parse(REPO).expect("scope"),
        github::Auth::Token(sim.token()),
    ))
    .expect("github client")
}

/// A manager's config for [`REPO`] on `sim` and `image`, its state and events log in `state`;
/// instances get a minute to answer and to register (the machine is shared).
pub fn manager_config(sim: &SimHandle, image: &str, state: &Path) -> ManagerConfig {
    let mut config = ManagerConfig::new(
        GitHubPath::parse(REPO, "").expect("path"),
        &sim.web_url(),
        image,
        state,
    );
    config.ready_timeout = Duration::from_secs(60);
    config.boot_grace = Duration::from_secs(60);
    config.events_log = state.join("events.log");
    config
}

/// An HTTP proxy nobody listens on (the bridge's port 9), and the bridge itself not proxied:
/// the settings reach the runners, the simulator stays reachable.
pub fn proxies_on_the_bridge() -> ProxySettings {
    ProxySettings {
        http: Some(
            format!("http://{}:9", bridge_ip())
                .parse()
                .expect("proxy url"),
        ),
        https: None,
        no_proxy: Some(bridge_ip().to_string()),
    }
}

/// Downloads and verifies the runner binary the simulator lists for linux x64.
pub async fn install_runner_bin(manager: &RunnerManager) {
    let download = manager
        .get_latest_runner_bin_url("linux", "x64")
        .await
        .expect("download listed");
    manager
        .update_runner_bin(&download)
        .await
        .expect("binary verified");
    assert!(manager.check_runner_bin());
}

/// One pass of `manager` for `quantity` runners of [`resources`], which must run (its steps
/// may fail: see the report).
pub async fn reconcile(manager: &RunnerManager, quantity: usize) -> manager::ReconcileReport {
    manager
        .reconcile(quantity, &resources())
        .await
        .expect("the pass runs")
}

/// The number in the environment variable `var`, else `default`.
pub fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Until GitHub (the simulator) lists `n` of `manager`'s runners online; generous, as the
/// machine is shared and containers start slowly under load.
pub async fn wait_online(manager: &RunnerManager, n: usize) {
    for _ in 0..360 {
        let info = manager.get_github_info().await.expect("info");
        if info.iter().filter(|r| r.online).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{n} runners never came online");
}

/// A job of [`REPO`] for the runners labelled `label`, running `script`; its id.
pub fn enqueue(sim: &SimHandle, label: &str, script: impl Into<String>) -> u64 {
    sim.enqueue_job(JobSpec {
        labels: vec![label.to_owned()],
        script: script.into(),
        scope: Some(REPO.to_owned()),
        ..JobSpec::default()
    })
    .expect("enqueued")
}

/// Until job `id` reads `status`, at most `timeout`; the job as then seen. Panics on timeout.
pub async fn wait_job(sim: &SimHandle, id: u64, status: JobStatus, timeout: Duration) -> JobView {
    let deadline = Instant::now() + timeout;
    loop {
        let job = sim.job(id);
        if let Some(job) = job.as_ref().filter(|j| j.status == status) {
            return job.clone();
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not {status:?} after {timeout:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
