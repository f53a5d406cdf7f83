//! End to end on the real 3-member Incus cluster (`scripts/incus-cluster.sh`): the real binary,
//! the GitHub simulator, busybox containers and the fake runner.
//!
//! - `spread_balances_thirty_runners_over_three_members`: 30 runners of one pool end within ±1
//!   of equal over m1, m2 and m3, all online; the next pass plans nothing.
//! - `pack_fills_in_order_and_capacity_limits_hold`: `placement = "pack"` fills m1, then m2,
//!   then m3; with overcommit 1.0 no member gets more than its threads, and what has no room is
//!   reported, not forced (also with a pool's cpu equal to a member's threads).
//! - `a_killed_member_is_replaced_and_cleaned_when_back`: a member's incusd is SIGKILLed while
//!   one of its runners runs a job: within one pass its two runners are lost (not counted) and
//!   replaced on the other members, the pass does not hang, the job on the lost member is
//!   reported; when the member is back its stale idle runner is removed (instance and
//!   registration), the busy one finishes its job (never cut), and the fleet is back to its
//!   quantity with nothing double-counted.
//!
//! Config-level checks of the placement keys run without a cluster.

mod e2e_env;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e_env::*;
use runner_manager::config::Config;
use test_support::cluster;

/// Writes the single-pool config for `quantity` runners on the cluster: `lxd_extra` keys in
/// `[lxd]` and `runners_extra` in `[runners]`, then `[cluster]` with `cluster`.
fn write_cluster_config(
    env: &Env,
    quantity: u32,
    lxd_extra: &str,
    runners_extra: &str,
    cluster: &str,
) {
    env.write_config(quantity, None);
    let text = std::fs::read_to_string(&env.config).expect("config");
    let mut text = with_lxd_keys(&text, &cluster::socket(), &format!("{lxd_extra}\n"));
    // `[runners]` keys replace the rendered ones (`cpu = 1`...); `[cluster]` goes last.
    for line in runners_extra.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        let rendered = text
            .lines()
            .find(|l| l.split('=').next().unwrap_or_default().trim() == key)
            .map(str::to_owned);
        text = match rendered {
            Some(rendered) => text.replacen(&rendered, line, 1),
            None => format!("{text}{line}\n"),
        };
    }
    let text = format!("{text}\n[cluster]\n{cluster}\n");
    std::fs::write(&env.config, text).expect("config written");
}

/// Caches the runner binary (from the simulator), as an operator's first step.
async fn update_runner_bin(env: &Env) {
    let out = env.run(&["runner-bin", "update", "--json"]).await;
    assert_eq!(out.code, Some(0), "runner-bin update: {}", out.stderr);
}

/// An `Env` whose Incus client is the cluster's (its guard deletes the app's instances there).
async fn cluster_env() -> Env {
    let mut env = Env::new(test_support::incus::BUSYBOX).await;
    env.lxd = cluster::connect().await;
    env
}

/// The app's instances per member.
async fn per_member(env: &Env) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = cluster::MEMBERS
        .iter()
        .map(|m| ((*m).to_owned(), 0))
        .collect();
    for i in env.instances().await {
        *out.entry(i.location.clone()).or_default() += 1;
    }
    out
}

async fn reconcile(env: &Env) -> (serde_json::Value, String) {
    let (doc, out) = env.reconcile().await;
    (doc, out.stderr)
}

/// The instances of `counts` on members other than `member`.
fn elsewhere(counts: &BTreeMap<String, usize>, member: &str) -> usize {
    counts
        .iter()
        .filter(|(m, _)| *m != member)
        .map(|(_, n)| *n)
        .sum()
}

fn spread_ok(counts: &BTreeMap<String, usize>) -> bool {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min <= 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn spread_balances_thirty_runners_over_three_members() {
    let _serial = cluster::serial().await;
    let env = cluster_env().await;
    // 2 threads a member: overcommit 16 gives room for 32 one-CPU runners each.
    write_cluster_config(&env, 30, "", "", "overcommit_cpu = 16.0");
    update_runner_bin(&env).await;
    env.reconcile_until_clean().await;
    let counts = per_member(&env).await;
    env.clock.mark(&format!("per member: {counts:?}"));
    assert_eq!(counts.values().sum::<usize>(), 30, "{counts:?}");
    assert!(spread_ok(&counts), "not within ±1 of equal: {counts:?}");
    env.wait_online(30).await;
    let (doc, _) = reconcile(&env).await;
    assert_eq!(
        (doc["created"].as_u64(), doc["removed"].as_u64()),
        (Some(0), Some(0)),
        "{doc}"
    );
    env.flush_all(30).await;
    env.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn pack_fills_in_order_and_capacity_limits_hold() {
    let _serial = cluster::serial().await;
    let env = cluster_env().await;
    // One-CPU runners, 2 threads a member, no overcommit: two per member, m1 first.
    let no_overcommit = "placement = \"pack\"\novercommit_cpu = 1.0\novercommit_memory = 1.0";
    write_cluster_config(&env, 3, "", "", no_overcommit);
    update_runner_bin(&env).await;
    env.reconcile_until_clean().await;
    let want = |m1, m2, m3| {
        BTreeMap::from([
            ("m1".to_owned(), m1),
            ("m2".to_owned(), m2),
            ("m3".to_owned(), m3),
        ])
    };
    assert_eq!(per_member(&env).await, want(2, 1, 0));
    // Seven wanted, six fit: the last one is reported and retried, never forced.
    write_cluster_config(&env, 7, "", "", no_overcommit);
    let (doc, stderr) = reconcile(&env).await;
    assert_eq!(doc["created"].as_u64(), Some(3), "{doc}\n{stderr}");
    assert!(stderr.contains("No cluster member has room"), "{stderr}");
    assert!(stderr.contains("shortfall=1"), "{stderr}");
    assert_eq!(per_member(&env).await, want(2, 2, 2));
    let (doc, _) = reconcile(&env).await;
    assert_eq!(doc["created"].as_u64(), Some(0), "{doc}");
    env.wait_online(6).await;
    env.flush_all(6).await;

    // A pool's cpu equal to a member's threads: one runner per member.
    write_cluster_config(&env, 4, "", "cpu = 2", no_overcommit);
    let (doc, stderr) = reconcile(&env).await;
    assert_eq!(doc["created"].as_u64(), Some(3), "{doc}\n{stderr}");
    assert!(stderr.contains("shortfall=1"), "{stderr}");
    assert_eq!(per_member(&env).await, want(1, 1, 1));
    env.wait_online(3).await;
    env.flush_all(3).await;

    // `lxd.target` places every runner on that member (it was parsed and never applied).
    write_cluster_config(&env, 2, "target = \"m3\"", "", "overcommit_cpu = 16.0");
    env.reconcile_until_clean().await;
    assert_eq!(per_member(&env).await, want(0, 0, 2));
    env.wait_online(2).await;
    env.flush_all(2).await;
    env.assert_nothing_left().await;
}

/// Waits until `check` holds, at most `bound`; `what` names it in the failure, with the
/// daemon's log.
async fn eventually<F, Fut>(env: &Env, what: &str, bound: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    env.eventually(what, bound, Duration::from_millis(500), check)
        .await;
}

/// The daemon's passes come every `INTERVAL` seconds (plus jitter).
const INTERVAL: u64 = 10;
/// Two passes and their jitter: "within one pass" of an event, whenever it falls.
const TWO_PASSES: Duration = Duration::from_secs(3 * INTERVAL);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn a_killed_member_is_replaced_and_cleaned_when_back() {
    let _serial = cluster::serial().await;
    let mut env = cluster_env().await;
    write_cluster_config(&env, 6, "", "", "overcommit_cpu = 16.0");
    update_runner_bin(&env).await;
    env.reconcile_until_clean().await;
    assert!(spread_ok(&per_member(&env).await));
    env.wait_online(6).await;

    // A job runs on one runner; its member is the one that fails.
    let job = env.enqueue(
        &["self-hosted", &env.app],
        "sleep 90; echo done on $(hostname)",
    );
    let deadline = Instant::now() + WAIT;
    let busy = loop {
        let view = env.sim.job(job).expect("job");
        if view.status == github_sim::JobStatus::InProgress {
            break view.runner_name.expect("a runner took it");
        }
        assert!(
            Instant::now() < deadline,
            "the job never started: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let instances = env.instances().await;
    let member = instances
        .iter()
        .find(|i| i.name == busy)
        .map(|i| i.location.clone())
        .expect("the busy runner's instance");
    let lost: Vec<String> = instances
        .iter()
        .filter(|i| i.location == member)
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(lost.len(), 2, "{instances:#?}");
    let idle_lost = lost
        .iter()
        .find(|n| **n != busy)
        .cloned()
        .expect("idle one");

    // The daemon (what production runs) talks to the cluster through a member that stays up,
    // on a 10 s timer; its first pass sees the whole fleet healthy.
    let survivor = cluster::MEMBERS
        .iter()
        .find(|m| **m != member)
        .copied()
        .expect("another member");
    let port = free_port();
    env.write_config(
        6,
        Some(&ServerSection {
            port,
            interval_seconds: INTERVAL,
        }),
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = with_lxd_keys(&text, &cluster::member_socket(survivor), "");
    std::fs::write(
        &env.config,
        format!("{text}\n[cluster]\novercommit_cpu = 16.0\n"),
    )
    .expect("config written");
    env.lxd = cluster::connect_member(survivor).await;
    env.start_daemon();
    let env = env;
    eventually(&env, "the daemon's first pass", TWO_PASSES, || async {
        let log = env.daemon_log();
        if log.contains("Reconciliation finished.") {
            Ok(())
        } else {
            Err("no pass yet".into())
        }
    })
    .await;
    env.clock
        .mark(&format!("job {job} on {busy} ({member}); killing {member}"));

    let killed = cluster::kill_member(&member).await;
    cluster::wait_member_status(&env.lxd, &member, "Offline", Duration::from_secs(90)).await;
    env.clock.mark(&format!("{member} offline"));

    // Within a pass: the two lost runners are replaced on the others (never above 6 + 2), the
    // idle one's registration goes, the busy one's stays and its job is reported.
    eventually(&env, "lost runners replaced", TWO_PASSES, || async {
        let counts = per_member(&env).await;
        let online = elsewhere(&counts, &member);
        let registrations = env.registrations();
        let log = env.daemon_log();
        let reported = log.contains("Jobs running on a lost cluster member") && log.contains(&busy);
        let idle_gone = !registrations.iter().any(|r| r.name == idle_lost);
        let busy_kept = registrations.iter().any(|r| r.name == busy && r.busy);
        if online == 6 && reported && idle_gone && busy_kept {
            Ok(())
        } else {
            Err(format!(
                "on online members {online}, reported {reported}, idle registration gone \
                 {idle_gone}, busy kept {busy_kept}: {counts:?}"
            ))
        }
    })
    .await;
    // Nothing is double-counted: the fleet stays there for two more passes.
    let until = Instant::now() + TWO_PASSES;
    while Instant::now() < until {
        let counts = per_member(&env).await;
        let online = elsewhere(&counts, &member);
        assert_eq!(online, 6, "{counts:?}\n{}", env.daemon_log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The member comes back with its stale instances: the idle one is removed (instance and
    // registration) within a pass; the busy one finishes its job (never cut), then goes too.
    let restart = killed.start().await;
    cluster::wait_member_status(&env.lxd, &member, "Online", Duration::from_secs(90)).await;
    env.clock.mark(&format!("{member} back after {restart:?}"));
    eventually(&env, "stale idle runner removed", TWO_PASSES, || async {
        let names: Vec<String> = env.instances().await.into_iter().map(|i| i.name).collect();
        if names.contains(&idle_lost) {
            Err(format!("{idle_lost} still there: {names:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    let done = env.sim.wait_for_job(job, WAIT).await.expect("the job");
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{done:#?}");
    eventually(&env, "the fleet back at 6", TWO_PASSES * 2, || async {
        let instances = env.instances().await;
        let registrations = env.registrations();
        if instances.len() > 6 + 2 {
            panic!("above quantity + lost: {instances:#?}");
        }
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        if instances.len() == 6
            && !names.contains(&busy.as_str())
            && registrations.len() == 6
            && registrations.iter().all(|r| r.status == "online")
        {
            Ok(())
        } else {
            Err(format!(
                "instances {names:?}, registrations {}",
                registrations.len()
            ))
        }
    })
    .await;
}

// ------------------------------------------------------------------ config (no cluster needed)

/// A plain `cargo test` (no cluster) must report the cluster tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_here(&[
        "incus_tests_are_ignored_by_default",
        "placement_keys_parse_and_fall_back",
        "bad_placement_keys_are_named",
    ]);
}

struct NoEnv;

impl runner_manager::config::Environment for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

const BASE: &str = r#"
[github]
path = "octo/app"
token = "ghp_0123456789abcdef"
"#;

fn parse(extra: &str) -> Result<Config, String> {
    Config::parse(&format!("{BASE}{extra}"), Path::new("/"), &NoEnv).map_err(|e| e.to_string())
}

#[test]
fn placement_keys_parse_and_fall_back() {
    use manager::pool::{Placement, PlacementTarget, Strategy};
    let config = parse(
        r#"
[lxd]
target = "@fast"

[cluster]
placement = "pack"
overcommit_cpu = 2.5
overcommit_memory = 1.2

[[pools]]
name = "a"
max = 3

[[pools]]
name = "b"
labels = ["b"]
max = 3
placement = "spread"
target = "m2"
"#,
    )
    .expect("valid");
    assert_eq!(config.cluster.overcommit.cpu, 2.5);
    assert_eq!(config.cluster.overcommit.memory, 1.2);
    assert_eq!(
        config.pools[0].placement,
        Placement {
            strategy: Strategy::Pack,
            target: Some(PlacementTarget::Group("fast".into())),
        }
    );
    assert_eq!(
        config.pools[1].placement,
        Placement {
            strategy: Strategy::Spread,
            target: Some(PlacementTarget::Member("m2".into())),
        }
    );
    // The single-pool form takes `lxd.target` and `[cluster] placement`.
    let single = parse("[lxd]\ntarget = \"m1\"\n[runners]\nquantity = 2\n").expect("valid");
    assert_eq!(
        single.pool_specs()[0].placement,
        Placement {
            strategy: Strategy::Spread,
            target: Some(PlacementTarget::Member("m1".into())),
        }
    );
    let defaults = parse("").expect("valid");
    assert_eq!(defaults.single_placement(), Placement::default());
    assert_eq!(
        defaults.cluster.overcommit,
        manager::placement::Overcommit::default()
    );
}

#[test]
fn bad_placement_keys_are_named() {
    for (extra, key) in [
        ("[cluster]\nplacement = \"m1\"\n", "cluster.placement"),
        (
            "[cluster]\novercommit_cpu = 0.0\n",
            "cluster.overcommit_cpu",
        ),
        (
            "[cluster]\novercommit_memory = -1.0\n",
            "cluster.overcommit_memory",
        ),
        ("[lxd]\ntarget = \"@\"\n", "lxd.target"),
        ("[lxd]\ntarget = \" \"\n", "lxd.target"),
        (
            "[[pools]]\nname = \"a\"\nmax = 1\nplacement = \"fill\"\n",
            "pools[0].placement",
        ),
        (
            "[[pools]]\nname = \"a\"\nmax = 1\ntarget = \"m 1\"\n",
            "pools[0].target",
        ),
    ] {
        let error = parse(extra).expect_err(extra);
        assert!(error.contains(key), "{extra}: {error}");
    }
    let error = parse("[cluster]\nplacement = \"m1\"\n").expect_err("invalid");
    assert!(error.contains("target = \"m1\""), "{error}");
}
