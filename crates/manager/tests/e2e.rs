//! End to end on real Incus containers, the GitHub simulator and the fake runner tarball, on both
//! images `scripts/incus-env.sh up` imports: `busybox` (a static busybox, a shell-script init)
//! and `debian/bookworm` (systemd as PID 1, dash as /bin/sh, a `ubuntu` user: like the server
//! images operators run). Each such test exists once per image, `busybox::<name>` and
//! `debian::<name>`, so they run in parallel and a failure names its image.
//!
//! The tests that need Incus are `#[ignore]`d, so a plain `cargo test` reports them as ignored,
//! never as passed: `scripts/test.sh` (which brings Incus up and builds the static fake runner)
//! runs them with `--run-ignored all`. `incus_tests_are_ignored_by_default` keeps it that way.
//!
//! Every test uses its own app name, so tests run in parallel and never see each other's runners;
//! a failed test deletes the instances named after its app.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{resources, REPO};
use github_sim::{JobStatus, SimHandle};
use manager::events::Metrics;
use manager::model::{APP_KEY, UNIT_KEY};
use manager::policy::PolicyConfig;
use manager::{Backends, FlushMode, ManagerConfig, RegistrationMode, RunnerManager};
use test_support::incus::{bridge_ip, random_app, CleanupOnPanic, BUSYBOX};
use test_support::incus_ignored;
use test_support::policy::PolicyService;

// What runs inside the instances depends on the image (shell, init, users, tools): these run on
// both. The three other Incus tests below never run anything inside an instance, so they run once.
test_support::on_both_images!(
    worker_threads = 4;
    reconcile_job_scale_down_keeps_busy_and_flush,
    job_assigned_during_delete_is_never_killed,
    dead_dangling_orphan_cleaned_and_foreign_untouched,
    jit_mode_runs_jobs_without_visible_secrets,
    non_root_user_runs_the_runner,
    policy_check_allows_and_blocks,
    a_lying_busy_flag_never_kills_a_running_job,
);

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

/// Every process's command line. `-e`: without it procps (Debian) lists only the caller's own
/// processes, and the runner runs as `ubuntu` there; busybox's ps accepts it too.
const ALL_PROCESSES: &str = "ps -eo args 2>/dev/null || ps";

struct Env {
    app: String,
    /// The image alias the manager creates its instances from.
    image: String,
    sim: SimHandle,
    lxd: lxd::Client,
    manager: RunnerManager,
    _state: tempfile::TempDir,
    events_log: std::path::PathBuf,
    /// A failed test still removes its instances (every name it makes starts with its app name).
    _cleanup: CleanupOnPanic,
}

/// `e2e` and 6 letters.
fn new_app() -> String {
    random_app("e2e", 6)
}

async fn env_with(image: &str, unit: u32, edit: impl FnOnce(&mut ManagerConfig)) -> Env {
    env_for(new_app(), image, unit, common::start_sim().await, edit).await
}

async fn env_for(
    app: String,
    image: &str,
    unit: u32,
    sim: SimHandle,
    edit: impl FnOnce(&mut ManagerConfig),
) -> Env {
    let state = tempfile::tempdir().expect("tempdir");
    let lxd = lxd::Client::discover().await.expect("incus is up");
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut prometheus);
    let client = common::github_client(&sim);
    let mut config = common::manager_config(&sim, image, state.path());
    let events_log = config.events_log.clone();
    edit(&mut config);
    let image = config.image.clone();
    let proxies = common::proxies_on_the_bridge();
    let backends = Backends::real(client, None, lxd.clone(), metrics);
    let manager = RunnerManager::new(&app, unit, config, &proxies, backends).expect("manager");
    Env {
        _cleanup: CleanupOnPanic::new(&lxd, format!("{app}-")),
        app,
        image,
        sim,
        lxd,
        manager,
        _state: state,
        events_log,
    }
}

impl Env {
    /// One pass for `quantity` runners of [`resources`], which must run.
    async fn reconcile(&self, quantity: usize) -> manager::ReconcileReport {
        common::reconcile(&self.manager, quantity).await
    }

    async fn install_binary(&self) {
        common::install_runner_bin(&self.manager).await;
    }

    /// Instances carrying this app's key.
    async fn instances(&self) -> Vec<lxd::Instance> {
        self.lxd
            .list_instances_with_config(APP_KEY, &self.app)
            .await
            .expect("list")
    }

    /// Sim runners whose name starts with this app's name.
    fn sim_runners(&self) -> Vec<github_sim::RunnerView> {
        self.sim
            .runners()
            .into_iter()
            .filter(|r| r.name.starts_with(&format!("{}-", self.app)))
            .collect()
    }

    async fn wait_online(&self, n: usize) {
        common::wait_online(&self.manager, n).await;
    }

    /// Waits until GitHub (the sim) shows `name` offline: its silence timeout after the runner's
    /// last poll, which a killed runner's open long poll (up to 50 s) can delay.
    async fn wait_offline(&self, name: &str) {
        for _ in 0..1200 {
            if self
                .sim_runners()
                .iter()
                .any(|r| r.name == name && r.status == "offline")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} still online on GitHub after 120 s");
    }

    async fn wait_job(&self, id: u64, status: JobStatus) -> github_sim::JobView {
        common::wait_job(&self.sim, id, status, Duration::from_secs(60)).await
    }

    /// Until job `id` has completed with `conclusion`; the job.
    async fn wait_done(&self, id: u64, conclusion: &str) -> github_sim::JobView {
        let done = self.wait_job(id, JobStatus::Completed).await;
        assert_eq!(
            done.conclusion.as_deref(),
            Some(conclusion),
            "{}",
            done.output
        );
        done
    }

    fn job(&self, script: &str) -> u64 {
        common::enqueue(&self.sim, &self.app, script)
    }

    async fn exec(&self, name: &str, script: &str) -> String {
        let out = self
            .lxd
            .exec(
                name,
                &lxd::ExecRequest::shell(script).timeout(Duration::from_secs(30)),
            )
            .await
            .expect("exec");
        out.stdout_text()
    }

    /// No registration secret on a process's command line or in its environment, nor left in a
    /// file of the runner's.
    async fn assert_no_visible_secrets(&self, name: &str) {
        let ps = self.exec(name, ALL_PROCESSES).await;
        for flag in ["--token ", "--jitconfig "] {
            assert!(!ps.contains(flag), "{flag}on a command line: {ps}");
        }
        let environ = self
            .exec(name, "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c ACTIONS_RUNNER_INPUT || true")
            .await;
        assert_eq!(environ.trim(), "0", "secret in a process environment");
        let files = self
            .exec(name, "ls -a /opt/actions-runner /var/lib/runner-manager")
            .await;
        assert!(
            !files.contains(".jitconfig") && !files.contains("token"),
            "{files}"
        );
    }

    /// Flushes everything and checks nothing is left.
    async fn teardown(&self) {
        self.manager
            .flush(FlushMode::IncludingBusy)
            .await
            .expect("flush");
        assert!(self.instances().await.is_empty(), "instances left behind");
        // The simulator stops with the test's runtime.
    }
}

async fn reconcile_job_scale_down_keeps_busy_and_flush(image: &str) {
    let env = env_with(image, 0, |c| c.issue_metrics = true).await;
    env.install_binary().await;

    let first = env.reconcile(2).await;
    assert_eq!(first.delta, 2);
    assert_eq!(first.created.len(), 2, "{:?}", first.failed);
    env.wait_online(2).await;
    // Token mode: no secret on a command line, in a process environment or left in a file.
    env.assert_no_visible_secrets(&first.created[0].to_string())
        .await;
    let second = env.reconcile(2).await;
    assert_eq!(second.delta, 0);
    assert!(
        second.created.is_empty() && second.removed.is_empty(),
        "{second:?}"
    );

    // A job runs inside a container and its output comes back; the proxy settings reach it.
    let job = env.job("echo hello-from-$(hostname) proxy=$http_proxy HTTP=$HTTP_PROXY; sleep 8");
    let running = env.wait_job(job, JobStatus::InProgress).await;
    let busy = running.runner_name.clone().expect("assigned");

    // reconcile(1) while one is busy: the busy one and its job survive, the idle one goes.
    let third = env.reconcile(1).await;
    assert_eq!(third.delta, -1);
    assert_eq!(third.removed.len(), 1, "{third:?}");
    assert_ne!(third.removed[0].0.as_str(), busy);
    let names: Vec<String> = env.instances().await.into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec![busy.clone()]);

    let done = env.wait_done(job, "success").await;
    let proxy = format!("http://{}:9", bridge_ip());
    assert!(
        done.output.contains(&format!("hello-from-{busy}")),
        "{}",
        done.output
    );
    assert!(
        done.output.contains(&format!("proxy={proxy} HTTP={proxy}")),
        "{}",
        done.output
    );

    // The finished ephemeral runner is replaced; its job metadata becomes events.
    let fourth = env.reconcile(1).await;
    assert_eq!(fourth.removed.len(), 1, "{fourth:?}");
    assert_eq!(fourth.removed[0].1.as_str(), "finished", "{fourth:?}");
    assert_eq!(fourth.created.len(), 1, "{fourth:?}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&env.events_log)
        .expect("events log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in [
        "runner_installed",
        "reconciliation",
        "runner_start",
        "runner_stop",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let stop = events
        .iter()
        .find(|e| e["event"] == "runner_stop")
        .expect("runner_stop");
    assert_eq!(stop["flavor"], env.app.as_str());
    assert_eq!(stop["status"], "normal");
    assert_eq!(stop["repo"], REPO);
    assert!(
        stop["job_duration"].as_u64().is_some_and(|d| d >= 7),
        "{stop}"
    );
    for e in &events {
        assert!(e["timestamp"].is_i64(), "{e}");
    }

    // flush(false) spares a busy runner, flush(true) removes it; counts are exact.
    env.wait_online(1).await;
    let job = env.job("sleep 30");
    let busy = env
        .wait_job(job, JobStatus::InProgress)
        .await
        .runner_name
        .expect("assigned");
    env.reconcile(2).await;
    env.wait_online(2).await;
    let idle_flush = env.manager.flush(FlushMode::IdleOnly).await.expect("flush");
    assert_eq!(idle_flush.removed.len(), 1, "{idle_flush:?}");
    assert_eq!(idle_flush.skipped_busy.len() + idle_flush.failed.len(), 0);
    let names: Vec<String> = env.instances().await.into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec![busy.clone()]);
    let busy_flush = env
        .manager
        .flush(FlushMode::IncludingBusy)
        .await
        .expect("flush");
    assert_eq!(busy_flush.removed.len(), 1, "{busy_flush:?}");
    assert!(env.instances().await.is_empty());
    assert!(env.sim_runners().is_empty(), "{:?}", env.sim_runners());
    env.teardown().await;
}

async fn job_assigned_during_delete_is_never_killed(image: &str) {
    let env = env_with(image, 0, |_| {}).await;
    env.install_binary().await;
    let rounds = common::env_count("RUNNER_MANAGER_RACE_ROUNDS", 4);
    for round in 0..rounds {
        // Creation may fail on a loaded machine; the next pass retries (not what is tested here).
        for attempt in 0..3 {
            let report = env.reconcile(1).await;
            if report.failed.is_empty() {
                break;
            }
            eprintln!("round {round} attempt {attempt}: {:?}", report.failed);
            assert!(attempt < 2, "round {round}: {report:?}");
        }
        env.wait_online(1).await;
        let info = env.manager.get_github_info().await.expect("info");
        let idle: Vec<_> = info.iter().filter(|r| r.online && !r.busy).collect();
        assert_eq!(idle.len(), 1, "round {round}: {info:?}");
        let name = idle[0].name.to_string();
        env.sim.set_assign_on_delete(Some(&name), true);
        let report = env.reconcile(0).await;
        assert_eq!(report.skipped_busy.len(), 1, "round {round}: {report:?}");
        assert!(report.removed.is_empty(), "round {round}: {report:?}");
        let names: Vec<String> = env.instances().await.into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            vec![name.clone()],
            "round {round}: busy runner's instance deleted"
        );
        // The job the hook assigned runs to completion on that runner.
        let job = env
            .sim
            .jobs()
            .into_iter()
            .find(|j| j.runner_name.as_deref() == Some(name.as_str()))
            .expect("the hook assigned a job");
        let done = env.wait_job(job.job_id, JobStatus::Completed).await;
        assert_eq!(done.conclusion.as_deref(), Some("success"), "round {round}");
    }
    env.teardown().await;
}

/// GitHub's busy flag reads `false` and its `DELETE` succeeds while a job runs (github-sim's
/// busy-lie fault): the manager looks inside the instance before deregistering, so neither a
/// scale-down nor an idle-only flush kills the job; the idle runner beside it goes.
async fn a_lying_busy_flag_never_kills_a_running_job(image: &str) {
    let env = env_with(image, 0, |_| {}).await;
    env.install_binary().await;
    let report = env.reconcile(2).await;
    assert_eq!(report.created.len(), 2, "{report:?}");
    env.wait_online(2).await;
    let job = env.job("sleep 4; echo lived");
    let running = loop {
        let view = env.sim.job(job).expect("job");
        if view.status == JobStatus::InProgress {
            break view.runner_name.expect("runner");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The job-started hook has run once the job is in progress on the runner's side.
    for _ in 0..100 {
        let out = env
            .exec(
                &running,
                "cat /var/lib/runner-manager/pre-job.json 2>/dev/null; true",
            )
            .await;
        if out.contains("timestamp") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.sim.set_busy_lie(Some(github_sim::BusyLieSpec::all()));
    let info = env.manager.get_github_info().await.expect("info");
    assert!(info.iter().all(|r| !r.busy), "the lie is armed: {info:?}");

    let report = env.reconcile(0).await;
    assert_eq!(
        report
            .skipped_busy
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        vec![running.clone()],
        "{report:?}"
    );
    assert_eq!(report.removed.len(), 1, "the idle one goes: {report:?}");
    let flushed = env.manager.flush(FlushMode::IdleOnly).await.expect("flush");
    assert!(flushed.removed.is_empty(), "{flushed:?}");
    assert_eq!(flushed.skipped_busy.len(), 1, "{flushed:?}");

    let done = env.wait_done(job, "success").await;
    assert!(!done.killed_by_deletion);
    assert_eq!(env.sim.busy_lie().jobs_killed_by_deletion, 0);
    env.sim.set_busy_lie(None);
    env.teardown().await;
}

async fn dead_dangling_orphan_cleaned_and_foreign_untouched(image: &str) {
    // App "<x>" unit 1 next to app "<x>-1" unit 0: the prefix collides, ownership must not.
    let env = env_with(image, 1, |c| c.boot_grace = Duration::from_secs(3)).await;
    env.install_binary().await;
    let report = env.reconcile(1).await;
    let victim = report.created[0].to_string();
    env.wait_online(1).await;

    // Kill the runner inside the instance: its whole process group (start.sh, run.sh and the
    // listener; busybox has no pkill).
    env.exec(
        &victim,
        "kill -9 \"-$(cat /var/lib/runner-manager/runner.pgid)\"; true",
    )
    .await;

    // An orphan (ours, a live "runner" that never registered), foreign instances, a dangling
    // registration.
    let keys = |app: &str, unit: &str| {
        BTreeMap::from([
            (APP_KEY.to_owned(), app.to_owned()),
            (UNIT_KEY.to_owned(), unit.to_owned()),
        ])
    };
    let orphan = format!("{}-1-orphan00", env.app);
    let foreign = [
        (
            format!("{}-1-0-abcdefgh", env.app),
            keys(&format!("{}-1", env.app), "0"),
        ),
        (format!("{}-1-unlabel0", env.app), BTreeMap::new()),
        (format!("{}-1-other000", env.app), keys(&env.app, "2")),
    ];
    let mut specs = vec![(orphan.clone(), keys(&env.app, "1"), true)];
    specs.extend(foreign.iter().map(|(n, k)| (n.clone(), k.clone(), false)));
    for (name, config, start) in &specs {
        let mut spec =
            lxd::InstanceSpec::new(name.as_str(), lxd::ImageSource::Alias(env.image.clone()));
        if *start {
            spec = spec.started();
        }
        for (k, v) in config {
            spec = spec.config(k, v);
        }
        // Test setup on a loaded machine: retry a failed start (not what is under test).
        let mut attempt = 0;
        while let Err(error) = env.lxd.create_instance(&spec).await {
            attempt += 1;
            assert!(attempt < 3, "creating {name}: {error}");
            let _ = env.lxd.force_delete_instance(name).await;
        }
    }
    env.exec(
        &orphan,
        "mkdir -p /var/lib/runner-manager; sleep 3600 </dev/null >/dev/null 2>&1 & echo $! >/var/lib/runner-manager/runner.pid",
    )
    .await;
    let scope = github_sim::Scope::parse(REPO).expect("scope");
    let reg_token = env.sim.registration_token(&scope).expect("token");
    let dangling = format!("{}-1-dangling", env.app);
    let foreign_reg = format!("{}-1-0-zzzzzzzz", env.app);
    for name in [&dangling, &foreign_reg] {
        let response = reqwest::Client::new()
            .post(format!("{}/_runner/register", env.sim.base_url()))
            .header("Authorization", format!("RemoteAuth {}", reg_token.expose()))
            .json(&serde_json::json!({"url": format!("{}/{REPO}", env.sim.web_url()), "name": name,
                "labels": ["x"], "ephemeral": true, "replace": false, "no_default_labels": false, "work": "_work"}))
            .send()
            .await
            .expect("register");
        assert!(response.status().is_success(), "{}", response.status());
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // past the 3 s boot grace
                                                      // A runner GitHub reports online is alive (idle passes probe nothing); the dead one is
                                                      // probed once GitHub stops hearing from it.
    env.wait_offline(&victim).await;

    let report = env.reconcile(1).await;
    let removed: BTreeMap<String, String> = report
        .removed
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    assert_eq!(
        removed.get(&victim).map(String::as_str),
        Some("process_dead"),
        "{report:?}"
    );
    // "unresponsive" when the probe exec fails on a loaded host; the plan's unit tests pin the
    // orphan classification itself.
    assert!(
        matches!(
            removed.get(&orphan).map(String::as_str),
            Some("orphan" | "unresponsive")
        ),
        "{report:?}"
    );
    assert_eq!(
        removed.get(&dangling).map(String::as_str),
        Some("dangling"),
        "{report:?}"
    );
    assert_eq!(removed.len(), 3, "{report:?}");
    assert_eq!(report.created.len() + report.failed.len(), 1, "{report:?}");
    for (name, _) in &foreign {
        assert!(
            env.lxd.get_instance(name).await.is_ok(),
            "foreign {name} touched"
        );
        env.lxd.force_delete_instance(name).await.expect("cleanup");
    }
    assert!(
        env.sim.runners().iter().any(|r| r.name == foreign_reg),
        "foreign registration touched"
    );
    env.teardown().await;
}

/// Creates no instance: image-independent, so on busybox only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn runner_binary_mismatch_keeps_old_and_missing_binary_refuses() {
    let env = env_with(BUSYBOX, 0, |_| {}).await;
    let err = env
        .manager
        .reconcile(1, &resources())
        .await
        .expect_err("no binary");
    assert!(err.to_string().contains("no runner binary"), "{err}");
    assert!(
        env.instances().await.is_empty(),
        "touched something without a binary"
    );

    env.install_binary().await;
    let before = env.manager.runner_bin().expect("cached");
    let mut bad = env
        .manager
        .get_latest_runner_bin_url("linux", "x64")
        .await
        .expect("listed");
    bad.sha256 = "0".repeat(64);
    let err = env
        .manager
        .update_runner_bin(&bad)
        .await
        .expect_err("mismatch");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(env.manager.runner_bin(), Some(before));
    let err = env
        .manager
        .get_latest_runner_bin_url("freebsd", "x64")
        .await
        .expect_err("no freebsd");
    assert!(err.to_string().contains("freebsd"), "{err}");
    env.teardown().await;
}

async fn jit_mode_runs_jobs_without_visible_secrets(image: &str) {
    let env = env_with(image, 0, |c| c.registration_mode = RegistrationMode::Jit).await;
    env.install_binary().await;
    let report = env.reconcile(1).await;
    assert_eq!(report.created.len(), 1, "{report:?}");
    env.wait_online(1).await;
    let name = report.created[0].to_string();

    let ps = env.exec(&name, ALL_PROCESSES).await;
    assert!(
        ps.contains("Runner.Listener") || ps.contains("run.sh"),
        "{ps}"
    );
    env.assert_no_visible_secrets(&name).await;
    let instance = env.lxd.get_instance(&name).await.expect("instance");
    for (key, value) in &instance.config {
        assert!(
            key.starts_with("user.runner-manager.")
                || key.starts_with("volatile.")
                || key.starts_with("image."),
            "unexpected config {key}={value}"
        );
    }

    let job = env.job("echo jit-ok");
    let done = env.wait_done(job, "success").await;
    assert!(done.output.contains("jit-ok"), "{}", done.output);
    env.teardown().await;
}

/// An image with an unprivileged user: the runner, its hooks and its jobs run as that user, and
/// its files are that user's. On busybox, `busybox-user` and its `runner` (uid 1001; no runuser, a
/// busybox setpriv without --reuid, so the install drops to the user with `su`); on Debian, the
/// image's own `ubuntu` (uid 1000, dropped to with util-linux `runuser`).
async fn non_root_user_runs_the_runner(image: &str) {
    let (image, user, uid) = if image == BUSYBOX {
        ("busybox-user", "runner", "1001")
    } else {
        (image, "ubuntu", "1000")
    };
    let env = env_with(image, 0, |_| {}).await;
    env.install_binary().await;
    let report = env.reconcile(1).await;
    assert_eq!(report.created.len(), 1, "{report:?}");
    env.wait_online(1).await;
    let name = report.created[0].to_string();

    let ps = env.exec(&name, "ps -eo user,args").await;
    let runner_lines: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains("run.sh") || l.contains("runner-agent"))
        .collect();
    assert!(!runner_lines.is_empty(), "{ps}");
    for line in &runner_lines {
        assert!(
            line.trim_start().starts_with(user) || line.trim_start().starts_with(uid),
            "not run as {user}: {line}\n{ps}"
        );
    }
    let owners = env
        .exec(
            &name,
            "stat -c '%u %n' /opt/actions-runner/.env /opt/actions-runner/run.sh /var/lib/runner-manager",
        )
        .await;
    assert_eq!(
        owners
            .lines()
            .filter(|l| l.starts_with(&format!("{uid} ")))
            .count(),
        3,
        "{owners}"
    );
    let dotenv = env.exec(&name, "cat /opt/actions-runner/.env").await;
    assert!(!dotenv.contains("RUNNER_ALLOW_RUNASROOT"), "{dotenv}");
    let files = env.exec(&name, "ls -a /opt/actions-runner /tmp").await;
    assert!(
        !files.contains("token") && !files.contains("runner-manager-install"),
        "{files}"
    );

    let job = env.job("echo uid=$(id -u)");
    let done = env.wait_done(job, "success").await;
    assert!(
        done.output.contains(&format!("uid={uid}")),
        "{}",
        done.output
    );
    env.teardown().await;
}

/// No VM can start here (no vhost_vsock): the create request is refused whatever the image, so
/// on busybox only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn vm_mode_reaches_the_create_request_and_cleans_up() {
    let env = env_with(BUSYBOX, 0, |c| {
        c.instance_type = manager::InstanceType::VirtualMachine
    })
    .await;
    env.install_binary().await;
    let report = env.reconcile(1).await;
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        report.failed[0].error.contains("creating instance"),
        "{report:?}"
    );
    assert!(env.instances().await.is_empty(), "failed vm left behind");
    let profile = env
        .lxd
        .get_profile(&resources().profile_name())
        .await
        .expect("resource profile");
    let config = |key: &str| profile.config.get(key).map(String::as_str);
    assert_eq!(config("limits.cpu"), Some("1"));
    assert_eq!(config("limits.memory"), Some("256MiB"));
    let disk = profile.devices["root"].get("size").map(String::as_str);
    assert_eq!(disk, Some("1GiB"));
    env.teardown().await;
}

async fn policy_check_allows_and_blocks(image: &str) {
    let policy = PolicyService::start(bridge_ip(), "svc-token").await;
    let env = env_with(image, 0, |c| {
        c.policy = Some(PolicyConfig {
            manager_url: policy.url().to_owned(),
            runner_url: policy.url().to_owned(),
            service_token: manager::Secret::new("svc-token"),
        })
    })
    .await;
    env.install_binary().await;

    env.reconcile(1).await;
    env.wait_online(1).await;
    let allowed = env.job("echo allowed-job-ran");
    let done = env.wait_done(allowed, "success").await;
    assert!(done.output.contains("allowed-job-ran"));
    assert_eq!(policy.checks(), 1);

    policy.allow(false);
    let report = env.reconcile(1).await;
    assert_eq!(report.created.len(), 1, "{report:?}");
    env.wait_online(1).await;
    let blocked = env.job("echo blocked-job-ran");
    let done = env.wait_done(blocked, "failure").await;
    assert!(!done.output.contains("blocked-job-ran"), "{}", done.output);
    assert_eq!(policy.checks(), 2);
    env.teardown().await;
}

/// A pass that died after asking for an instance leaves the creation running on the daemon, and
/// until it gets far enough the instance is not listed: an observation made then would count
/// without it, and the instance would appear after the pass. The LXD provider waits for such a
/// creation before it answers. Here the creation is held by an image server that accepts and
/// never answers, then fails when the server goes away. No image is ever unpacked: it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn observation_waits_for_a_creation_left_in_flight() {
    use manager::provider::InstanceProvider;
    let app = new_app();
    let owner = manager::model::Owner::new(&app, 0).expect("owner");
    let name = owner.new_runner_name();
    let lxd = lxd::Client::discover().await.expect("incus is up");
    let _cleanup = CleanupOnPanic::new(&lxd, format!("{app}-"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release, mut released) = tokio::sync::oneshot::channel::<()>();
    let image_server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = &mut released => break,
                Ok((socket, _)) = listener.accept() => held.push(socket),
            }
        }
        held.len()
    });

    // The dead pass's request.
    let spec = lxd::InstanceSpec::new(
        name.as_str(),
        lxd::ImageSource::Remote {
            server: format!("https://{addr}"),
            alias: "never".into(),
        },
    )
    .config(APP_KEY, &app)
    .config(UNIT_KEY, "0");
    let creation = {
        let lxd = lxd.clone();
        tokio::spawn(async move { lxd.create_instance(&spec).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ops = lxd.running_operations().await.expect("operations");
        if ops
            .iter()
            .any(|op| op.instance_names().iter().any(|n| n == name.as_str()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the creation never showed as running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let provider = manager::adapters::LxdProvider::new(lxd.clone());
    let observation = tokio::spawn(async move { provider.list_instances(&owner).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !observation.is_finished(),
        "the observation answered while a creation of one of its names was running: {:?}",
        observation.await
    );

    release.send(()).expect("image server running");
    let held = image_server.await.expect("image server");
    assert!(held >= 1, "the daemon never reached the image server");
    let listed = tokio::time::timeout(Duration::from_secs(90), observation)
        .await
        .expect("the observation ends once the creation has")
        .expect("task")
        .expect("listing");
    assert!(
        listed.iter().all(|i| i.name != name.as_str()),
        "the failed creation left an instance: {listed:?}"
    );
    let created = creation.await.expect("task");
    assert!(created.is_err(), "the creation cannot succeed: {created:?}");
    let _ = lxd.force_delete_instance(name.as_str()).await;
}
