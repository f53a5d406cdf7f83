//! Member failure on the real 3-member Incus cluster (`scripts/incus-cluster.sh`), end to end:
//! a `RunnerManager` over the real LXD provider (connected to the cluster's socket, m1 by
//! default) and the GitHub simulator on the Incus bridge, with the fake runner really running
//! jobs inside the containers.
//!
//! A fleet of 12 runners (the single-pool form, `reconcile(12, …)`: the cluster's default
//! placement spreads them), most of them busy with jobs that run until the test releases them.
//! Each round kills one member's incusd (SIGKILL: its containers keep running, their runners
//! keep talking to the simulator), waits until the cluster lists it `Offline`, and runs ONE
//! pass, which must:
//! - return within a bound (no call to the offline member hangs it);
//! - count the member's runners as lost, not healthy, and report its busy ones (jobs running
//!   on the lost member);
//! - bring the runners on the remaining members back to 12, creating no more than the lost
//!   runners, none on the offline member;
//! - remove no busy runner of a healthy member (their jobs then complete successfully).
//!
//! A second pass while the member is still offline must plan nothing (nothing double-counted).
//! Then the member is restarted and ONE pass must clean every stale instance (instance and
//! registration), leave exactly 12 runners, none counted twice, and no registration without
//! an instance.
//!
//! - `cluster_member_failure_lost_runners_replaced_and_stale_cleaned`: ≥ 10 rounds; before each
//!   kill the fleet has been observed by a pass that planned nothing (the daemon's periodic
//!   pass).
//! - `cluster_member_killed_right_after_the_pass_that_created_its_runners`: 2 rounds; every
//!   runner is renewed by one pass and the member killed before any other pass listed them
//!   (the window between a daemon's passes). A cluster lists an offline member's instances
//!   as stubs without their config, so these runners must be known from their creation.
//!
//! The member killed rotates over every member but the one the manager is connected to (its
//! endpoint: killing that one is a lost connection, not a lost member). The job scripts wait
//! for a file the test creates inside their container (`RELEASE`), so jobs outlast the passes
//! that must see them busy and end when the test says so. Rounds:
//! `RUNNER_MANAGER_CLUSTER_FAILURE_ROUNDS` (default 10). The CPU overcommit is raised: the
//! three members share this machine's 2 threads, and capacity is not what is tested here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::resources;
use github_sim::{JobStatus, SimHandle};
use manager::events::Metrics;
use manager::plan::RemovalReason;
use manager::{Backends, ProxySettings, RunnerManager};
use test_support::cluster::{self, Cleanup, MEMBERS};
use test_support::incus::{bridge_ip, random_app, BUSYBOX};
use test_support::incus_ignored;

/// The fleet.
const QUANTITY: usize = 12;
/// Jobs queued before each kill (more if a member has no busy runner then).
const BUSY_JOBS: usize = 9;
/// A pass that creates runners (the lost ones' replacements) returns within this.
const PASS_BOUND: Duration = Duration::from_secs(60);
/// A pass that creates nothing, with a member offline, returns within this: a call to the
/// offline member that waited for a request timeout (30 s) would exceed it.
const IDLE_PASS_BOUND: Duration = Duration::from_secs(10);
/// Until the cluster lists a killed member Offline (threshold 11 s, heartbeats a few seconds).
const OFFLINE_WAIT: Duration = Duration::from_secs(60);
/// The file a job waits for in its container.
const RELEASE: &str = "/tmp/rm-cluster-release";

/// A plain `cargo test` (no cluster) must report the cluster test as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

/// An error with its causes.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    manager::provider::render_chain(error)
}

struct Env {
    app: String,
    sim: SimHandle,
    /// The test's own client on the cluster (the manager has its own, on the same socket).
    lxd: lxd::Client,
    manager: RunnerManager,
    _state: tempfile::TempDir,
}

impl Env {
    async fn new(lxd: &lxd::Client, app: &str) -> Self {
        let sim = common::start_sim().await;
        let state = tempfile::tempdir().expect("tempdir");
        let mut prometheus = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut prometheus);
        let client = common::github_client(&sim);
        let mut config = common::manager_config(&sim, BUSYBOX, state.path());
        config.overcommit.cpu = 16.0;
        let proxies = ProxySettings {
            http: None,
            https: None,
            no_proxy: Some(bridge_ip().to_string()),
        };
        let backends = Backends::real(client, None, lxd.clone(), metrics);
        let manager = RunnerManager::new(app, 0, config, &proxies, backends).expect("manager");
        common::install_runner_bin(&manager).await;
        Self {
            app: app.to_owned(),
            sim,
            lxd: lxd.clone(),
            manager,
            _state: state,
        }
    }

    fn ours(&self, name: &str) -> bool {
        name.starts_with(&format!("{}-", self.app))
    }

    /// One pass for [`QUANTITY`] runners, which must return within `bound` and not fail; its
    /// duration.
    async fn pass(&self, what: &str, bound: Duration) -> (manager::ReconcileReport, Duration) {
        let started = Instant::now();
        let report = tokio::time::timeout(bound, self.manager.reconcile(QUANTITY, &resources()))
            .await
            .unwrap_or_else(|_| {
                panic!("{what}: the pass did not return within {bound:?}: a call hangs it")
            })
            .unwrap_or_else(|e| panic!("{what}: the pass failed: {}", chain(&e)));
        (report, started.elapsed())
    }

    /// [`pass`](Self::pass), and what an assertion on it says (`what` and the report).
    async fn reported_pass(
        &self,
        what: &str,
        bound: Duration,
    ) -> (manager::ReconcileReport, Duration, String) {
        let (report, took) = self.pass(what, bound).await;
        let context = format!("{what}: {report:#?}");
        (report, took, context)
    }

    /// This test's instances by name, with their member (an offline member's are listed as
    /// stubs: status `Error`, no config, their location).
    async fn instances(&self) -> BTreeMap<String, String> {
        self.lxd
            .list_instances()
            .await
            .expect("listing instances")
            .into_iter()
            .filter(|i| self.ours(&i.name))
            .map(|i| (i.name, i.location))
            .collect()
    }

    /// This test's registrations on the simulator, by name.
    fn registrations(&self) -> BTreeMap<String, github_sim::RunnerView> {
        self.sim
            .runners()
            .into_iter()
            .filter(|r| self.ours(&r.name))
            .map(|r| (r.name.clone(), r))
            .collect()
    }

    /// A job that runs until [`RELEASE`] exists in its container (at most 4 minutes).
    fn job(&self) -> u64 {
        let script = format!(
            "i=0; while [ ! -e {RELEASE} ] && [ \"$i\" -lt 240 ]; do sleep 1; i=$((i+1)); done; \
             echo \"released on $(hostname) after ${{i}}s\""
        );
        common::enqueue(&self.sim, &self.app, script)
    }

    async fn wait_job(&self, id: u64, status: JobStatus, timeout: Duration) -> github_sim::JobView {
        common::wait_job(&self.sim, id, status, timeout).await
    }

    /// Lets the job running in `runner`'s container end.
    async fn release(&self, runner: &str) {
        let request = lxd::ExecRequest::shell(format!("mkdir -p /tmp && touch {RELEASE}"))
            .timeout(Duration::from_secs(30));
        let out = self
            .lxd
            .exec(runner, &request)
            .await
            .unwrap_or_else(|e| panic!("releasing the job in {runner}: {e}"));
        assert_eq!(out.exit_code(), 0, "releasing the job in {runner}: {out:?}");
    }

    /// Lets the jobs running in these runners (`runner → job id`) end, and waits until each has
    /// completed successfully; the jobs, in that order.
    async fn release_jobs<'a>(
        &self,
        jobs: impl IntoIterator<Item = (&'a String, u64)> + Clone,
        what: &str,
    ) -> Vec<github_sim::JobView> {
        for (runner, _) in jobs.clone() {
            self.release(runner).await;
        }
        let mut done = Vec::new();
        for (runner, id) in jobs {
            let job = self
                .wait_job(id, JobStatus::Completed, Duration::from_secs(60))
                .await;
            assert_eq!(
                job.conclusion.as_deref(),
                Some("success"),
                "{what}: the job on {runner}: {job:?}"
            );
            done.push(job);
        }
        done
    }

    /// Whether the fleet is 12 running instances on online members, each registered, online
    /// and idle, with no other registration.
    async fn ready(&self) -> bool {
        let instances = self.instances().await;
        let registrations = self.registrations();
        instances.len() == QUANTITY
            && registrations.len() == QUANTITY
            && instances.keys().all(|n| {
                registrations
                    .get(n)
                    .is_some_and(|r| r.status == "online" && !r.busy)
            })
    }

    /// Until the fleet is [`ready`](Self::ready), at most `timeout`; whether it is.
    async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ready().await {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        true
    }

    /// Every runner replaced by ONE pass (a job on each, released, then the pass), and the
    /// new ones online; no pass runs after it, so none has listed them yet.
    async fn renew_fleet(&self, what: &str) {
        let located = self.instances().await;
        assert_eq!(located.len(), QUANTITY, "{what}: {located:?}");
        let ids: Vec<u64> = (0..QUANTITY).map(|_| self.job()).collect();
        let mut running = Vec::new();
        for &id in &ids {
            let job = self
                .wait_job(id, JobStatus::InProgress, Duration::from_secs(60))
                .await;
            running.push((
                job.runner_name.expect("an in-progress job has a runner"),
                id,
            ));
        }
        self.release_jobs(running.iter().map(|(r, id)| (r, *id)), what)
            .await;
        let (report, _) = self.pass(what, PASS_BOUND).await;
        assert!(report.failed.is_empty(), "{what}: {report:#?}");
        assert_eq!(report.created.len(), QUANTITY, "{what}: {report:#?}");
        assert!(
            self.wait_ready(Duration::from_secs(90)).await,
            "{what}: the new runners never came online: {:?} {:?}",
            self.instances().await,
            self.registrations()
        );
        let fresh: BTreeSet<String> = report.created.iter().map(|n| n.to_string()).collect();
        let now: BTreeSet<String> = self.instances().await.into_keys().collect();
        assert_eq!(fresh, now, "{what}");
    }

    /// Passes until the fleet is [`ready`](Self::ready), then one more that must plan nothing
    /// (the fleet as it is now has been observed: what the daemon's periodic pass does).
    async fn settle(&self, what: &str) {
        for attempt in 0..4 {
            let (report, _) = self.pass(what, PASS_BOUND).await;
            if !report.failed.is_empty() {
                eprintln!("{what}: settle pass {attempt}: {:?}", report.failed);
            }
            if !self.wait_ready(Duration::from_secs(90)).await {
                continue;
            }
            let (report, _) = self.pass(what, PASS_BOUND).await;
            if report.created.is_empty() && report.removed.is_empty() && report.failed.is_empty() {
                return;
            }
        }
        panic!(
            "{what}: the fleet never settled at {QUANTITY} idle online runners: instances {:?}, \
             registrations {:?}",
            self.instances().await,
            self.registrations()
        );
    }
}

/// One round's measurements.
#[derive(Debug, Default)]
struct Round {
    member: String,
    /// Killed → listed Offline.
    offline_after: Duration,
    /// The pass with the member offline.
    pass_lost: Duration,
    lost: usize,
    lost_busy: usize,
    /// Lost idle runners whose registration the pass removed.
    lost_registrations_removed: usize,
    replaced: usize,
    /// The next pass, member still offline (plans nothing).
    pass_steady: Duration,
    /// Busy runners on the healthy members, whose jobs completed successfully.
    healthy_jobs_ok: usize,
    /// `KilledMember::start`: until calls forwarded to it work.
    restart: Duration,
    /// The pass once the member is back.
    pass_back: Duration,
    stale_cleaned: usize,
    /// The lost member's jobs, as the simulator ended them.
    lost_jobs: Vec<String>,
}

/// What both tests start from: the cluster's lock (held for the whole test), every member
/// Online, the members that may be killed (all but the manager's endpoint), a cleanup of this
/// test's instances (pass or fail) and the manager with its simulator. Bind the parts in this
/// order: they are dropped in reverse (the manager and simulator first, the lock last).
async fn setup(tag: &str) -> (cluster::Serial, Cleanup, Vec<&'static str>, Env) {
    let serial = cluster::serial().await;
    let lxd = cluster::connect().await;
    for member in MEMBERS {
        cluster::wait_member_status(&lxd, member, "Online", Duration::from_secs(90)).await;
    }
    let endpoint = lxd.cluster().await.expect("the cluster").server_name;
    let victims: Vec<&'static str> = MEMBERS.into_iter().filter(|m| *m != endpoint).collect();
    assert!(!victims.is_empty(), "no member to kill besides {endpoint}");
    let app = random_app(tag, 6);
    let cleanup = Cleanup::new(&lxd, format!("{app}-"));
    let env = Env::new(&lxd, &app).await;
    (serial, cleanup, victims, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_member_failure_lost_runners_replaced_and_stale_cleaned() {
    let (_serial, _cleanup, victims, env) = setup("cmf").await;
    let started = Instant::now();

    // 12 runners, spread by the cluster's default placement: 4 per member.
    env.settle("initial fleet").await;
    let per_member = count_per_member(&env.instances().await);
    assert_eq!(
        per_member,
        MEMBERS.iter().map(|m| ((*m).to_owned(), 4)).collect(),
        "the default placement spreads 12 runners over 3 members"
    );
    eprintln!("initial fleet ready after {:?}", started.elapsed());
    let rounds = common::env_count("RUNNER_MANAGER_CLUSTER_FAILURE_ROUNDS", 10);
    kill_rounds(&env, &victims, rounds, BeforeKill::Settle, started).await;
}

/// The member dies right after the pass that created its runners, before any other pass
/// listed them (a daemon's pass interval is that window): they are its runners all the same,
/// lost within one pass, and stale once it is back. Every runner is renewed by one pass
/// (jobs on all 12, released, replaced), then the member is killed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_member_killed_right_after_the_pass_that_created_its_runners() {
    let (_serial, _cleanup, victims, env) = setup("cmg").await;
    let started = Instant::now();
    kill_rounds(&env, &victims, 2, BeforeKill::SettleAndRenew, started).await;
}

/// What a round does before it kills a member.
#[derive(Clone, Copy, PartialEq)]
enum BeforeKill {
    /// Settles the fleet (not in round 0: the test has just done so).
    Settle,
    /// Settles the fleet, then renews every runner in one pass.
    SettleAndRenew,
}

/// `rounds` rounds of [`one_round`], the member killed rotating over `victims`; prints the
/// table of measurements and the test's duration since `started`.
async fn kill_rounds(
    env: &Env,
    victims: &[&str],
    rounds: usize,
    before: BeforeKill,
    started: Instant,
) {
    let mut table = Vec::new();
    for round in 0..rounds {
        match before {
            BeforeKill::Settle if round == 0 => {}
            BeforeKill::Settle => {
                env.settle(&format!("round {round}: fleet before the kill"))
                    .await
            }
            BeforeKill::SettleAndRenew => {
                env.settle(&format!("round {round}: fleet")).await;
                env.renew_fleet(&format!("round {round}: renewing every runner"))
                    .await;
            }
        }
        let member = victims[round % victims.len()];
        let measured = one_round(env, round, member).await;
        eprintln!("round {round}: {measured:?}");
        table.push(measured);
    }
    print_table(&table);
    eprintln!("whole test: {:?}", started.elapsed());
}

fn count_per_member(instances: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for member in instances.values() {
        *counts.entry(member.clone()).or_insert(0) += 1;
    }
    counts
}

/// Queues jobs until every member that holds runners has a busy one (at least [`BUSY_JOBS`]);
/// each job's id and runner, once in progress.
async fn start_jobs(env: &Env, located: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    let mut ids: Vec<u64> = (0..BUSY_JOBS).map(|_| env.job()).collect();
    loop {
        let mut running = BTreeMap::new();
        for &id in &ids {
            let job = env
                .wait_job(id, JobStatus::InProgress, Duration::from_secs(60))
                .await;
            let runner = job.runner_name.expect("an in-progress job has a runner");
            assert!(located.contains_key(&runner), "{runner} is not ours");
            running.insert(runner, id);
        }
        let busy: BTreeSet<&String> = running.keys().map(|r| &located[r]).collect();
        let holding: BTreeSet<&String> = located.values().collect();
        if busy == holding || ids.len() == located.len() {
            return running;
        }
        ids.push(env.job());
    }
}

async fn one_round(env: &Env, round: usize, member: &str) -> Round {
    let what = |step: &str| format!("round {round} ({member} killed): {step}");
    let mut measured = Round {
        member: member.to_owned(),
        ..Round::default()
    };

    // Jobs on every member, then the member's runners (lost) and its busy ones.
    let located = env.instances().await;
    assert_eq!(located.len(), QUANTITY, "{located:?}");
    let jobs = start_jobs(env, &located).await;
    let lost: BTreeSet<String> = located
        .iter()
        .filter(|(_, m)| m.as_str() == member)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!lost.is_empty(), "{}: no runner there", what("setup"));
    let busy_lost: BTreeSet<String> = jobs.keys().filter(|r| lost.contains(*r)).cloned().collect();
    let idle_lost: BTreeSet<String> = lost.difference(&busy_lost).cloned().collect();
    let busy_healthy: BTreeSet<String> = jobs
        .keys()
        .filter(|r| !lost.contains(*r))
        .cloned()
        .collect();
    measured.lost = lost.len();
    measured.lost_busy = busy_lost.len();

    let killed = cluster::kill_member(member).await;
    let killed_at = Instant::now();
    cluster::wait_member_status(&env.lxd, member, "Offline", OFFLINE_WAIT).await;
    measured.offline_after = killed_at.elapsed();
    // One member offline is the scenario: under load the cluster may list the others Offline
    // for a moment too (a heartbeat round held up by the dead member), so they must read
    // Online first.
    for other in MEMBERS.into_iter().filter(|m| *m != member) {
        cluster::wait_member_status(&env.lxd, other, "Online", OFFLINE_WAIT).await;
    }
    for (runner, &id) in &jobs {
        let job = env.sim.job(id).expect("job");
        assert_eq!(
            job.status,
            JobStatus::InProgress,
            "{}: the job on {runner} ended before the pass: {job:?}",
            what("setup")
        );
    }

    // ONE pass with the member offline.
    let (report, took, context) = env
        .reported_pass(&what("pass with the member offline"), PASS_BOUND)
        .await;
    measured.pass_lost = took;
    assert!(report.failed.is_empty(), "{context}");
    assert_eq!(report.counts.lost, lost.len(), "lost runners: {context}");
    let healthy = report.counts.busy + report.counts.idle + report.counts.booting;
    assert_eq!(
        healthy,
        QUANTITY - lost.len(),
        "the runners on the other members, and only them, are healthy: {context}"
    );
    let reported_busy: BTreeSet<String> = report
        .pools
        .iter()
        .flat_map(|p| p.lost_busy.iter().map(|n| n.to_string()))
        .collect();
    assert_eq!(
        reported_busy, busy_lost,
        "the jobs running on the lost member are reported: {context}"
    );
    assert_eq!(
        report.created.len(),
        lost.len(),
        "the lost runners, no more, are replaced: {context}"
    );
    for (name, reason) in &report.removed {
        let name = name.to_string();
        assert!(
            idle_lost.contains(&name) && *reason == RemovalReason::Lost,
            "only idle lost runners' registrations may go ({name}: {reason}): {context}"
        );
    }
    measured.lost_registrations_removed = report.removed.len();
    measured.replaced = report.created.len();
    let after = env.instances().await;
    let there: BTreeSet<String> = after
        .iter()
        .filter(|(_, m)| m.as_str() == member)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(
        there, lost,
        "the offline member's instances are not called, nothing new goes there: {context}"
    );
    let elsewhere: BTreeSet<&String> = after.keys().filter(|n| !lost.contains(*n)).collect();
    assert_eq!(
        elsewhere.len(),
        QUANTITY,
        "12 runners on the remaining members: {after:?} {context}"
    );
    assert!(after.len() <= QUANTITY + lost.len(), "{after:?}");
    for name in &report.created {
        assert!(
            elsewhere.contains(&name.to_string()),
            "{name} is on a remaining member: {after:?}"
        );
    }
    for runner in &busy_healthy {
        assert!(
            elsewhere.contains(runner),
            "busy runner {runner} on a healthy member was removed: {context}"
        );
    }
    let registrations = env.registrations();
    for runner in &busy_lost {
        assert!(
            registrations.get(runner).is_some_and(|r| r.busy),
            "{runner}'s job runs on the lost member: its registration stays: {registrations:?}"
        );
    }

    // The next pass, member still offline: nothing to do, nothing counted twice, no hang.
    let (steady, took, context) = env
        .reported_pass(&what("second pass, member still offline"), IDLE_PASS_BOUND)
        .await;
    measured.pass_steady = took;
    assert!(
        steady.created.is_empty() && steady.removed.is_empty() && steady.failed.is_empty(),
        "{context}"
    );
    assert_eq!(steady.counts.lost, lost.len(), "{context}");
    assert_eq!(
        steady.counts.busy + steady.counts.idle + steady.counts.booting,
        QUANTITY,
        "{context}"
    );

    // The healthy members' jobs were never cut: released, they succeed.
    let healthy_jobs = busy_healthy.iter().map(|r| (r, jobs[r]));
    for done in env.release_jobs(healthy_jobs, &what("healthy jobs")).await {
        assert!(!done.killed_by_deletion, "{done:?}");
    }
    measured.healthy_jobs_ok = busy_healthy.len();

    // The member comes back with its stale instances; its jobs ran on meanwhile (the
    // containers kept running): released now, they end.
    measured.restart = killed.start().await;
    cluster::wait_member_status(&env.lxd, member, "Online", Duration::from_secs(60)).await;
    let lost_jobs = busy_lost.iter().map(|r| (r, jobs[r]));
    for done in env.release_jobs(lost_jobs, &what("lost jobs")).await {
        measured.lost_jobs.push(done.conclusion.unwrap_or_default());
    }

    // ONE pass once it is back: stale instances and registrations gone, 12 runners.
    let (back, took, context) = env
        .reported_pass(&what("pass once the member is back"), PASS_BOUND)
        .await;
    measured.pass_back = took;
    assert!(back.failed.is_empty(), "{context}");
    assert_eq!(back.counts.lost, 0, "{context}");
    let stale: BTreeSet<String> = back
        .removed
        .iter()
        .filter(|(_, r)| *r == RemovalReason::Stale)
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(stale, lost, "every stale runner is removed: {context}");
    measured.stale_cleaned = stale.len();
    // The other removals: the healthy members' runners whose job ended (ephemeral).
    let finished: BTreeSet<String> = back
        .removed
        .iter()
        .filter(|(_, r)| *r != RemovalReason::Stale)
        .map(|(n, _)| n.to_string())
        .collect();
    assert!(finished.is_subset(&busy_healthy), "{context}");
    let healthy = back.counts.busy + back.counts.idle + back.counts.booting;
    assert_eq!(
        healthy + busy_healthy.len(),
        QUANTITY,
        "a stale runner is never counted healthy, nor any runner twice: {context}"
    );
    assert_eq!(back.created.len(), QUANTITY - healthy, "{context}");
    let after = env.instances().await;
    assert_eq!(after.len(), QUANTITY, "{after:?} {context}");
    let created: BTreeSet<String> = back.created.iter().map(|n| n.to_string()).collect();
    for (name, location) in &after {
        assert!(
            !lost.contains(name),
            "stale {name} is still there: {context}"
        );
        assert!(
            location != member || created.contains(name),
            "{name} on {member} is neither created now nor healthy: {context}"
        );
    }
    let registrations = env.registrations();
    for name in registrations.keys() {
        assert!(
            after.contains_key(name),
            "registration {name} has no instance: {registrations:?} {context}"
        );
    }
    measured
}

fn print_table(rounds: &[Round]) {
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    eprintln!(
        "\n{:>5} {:>6} {:>8} {:>9} {:>4} {:>9} {:>8} {:>8} {:>10} {:>10} {:>8} {:>9} {:>5} {:>8}",
        "round",
        "member",
        "offline",
        "pass_lost",
        "lost",
        "lost_busy",
        "regs_rm",
        "replaced",
        "pass_idle",
        "healthy_ok",
        "restart",
        "pass_back",
        "stale",
        "lost_jobs"
    );
    for (i, r) in rounds.iter().enumerate() {
        let lost_ok = r.lost_jobs.iter().filter(|c| *c == "success").count();
        eprintln!(
            "{:>5} {:>6} {:>8} {:>9} {:>4} {:>9} {:>8} {:>8} {:>10} {:>10} {:>8} {:>9} {:>5} {:>8}",
            i,
            r.member,
            secs(r.offline_after),
            secs(r.pass_lost),
            r.lost,
            r.lost_busy,
            r.lost_registrations_removed,
            r.replaced,
            secs(r.pass_steady),
            r.healthy_jobs_ok,
            secs(r.restart),
            secs(r.pass_back),
            r.stale_cleaned,
            format!("{lost_ok}/{}", r.lost_jobs.len()),
        );
    }
    let sum = |f: fn(&Round) -> usize| rounds.iter().map(f).sum::<usize>();
    let max = |f: fn(&Round) -> Duration| rounds.iter().map(f).max().unwrap_or_default();
    eprintln!(
        "totals: {} rounds; lost {} (busy {}), replaced {}, stale cleaned {}; healthy-member \
         jobs completed {} (killed 0); lost-member jobs completed {}; pass with a member \
         offline max {}s, idle pass max {}s, pass once back max {}s",
        rounds.len(),
        sum(|r| r.lost),
        sum(|r| r.lost_busy),
        sum(|r| r.replaced),
        sum(|r| r.stale_cleaned),
        sum(|r| r.healthy_jobs_ok),
        sum(|r| r.lost_jobs.len()),
        secs(max(|r| r.pass_lost)),
        secs(max(|r| r.pass_steady)),
        secs(max(|r| r.pass_back)),
    );
}
