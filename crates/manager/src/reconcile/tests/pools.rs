//! Demand passes over several pools: each pool sized from the job table, its runners marked on
//! both sides, registered with its labels and group, and a second pass that plans nothing.

use time::OffsetDateTime;

use super::*;
use crate::jobs::{JobEvent, JobFacts, JobState};
use crate::pool::{PoolName, PoolSpec, Sizing, POOL_KEY};

fn pool(name: &str, labels: &[&str], min_idle: usize, max: usize) -> PoolSpec {
    PoolSpec {
        name: PoolName::new(name).expect("valid"),
        image: "jammy".into(),
        instance_type: crate::model::InstanceType::Container,
        resources: resources(),
        profiles: Vec::new(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        runner_group: None,
        registration: RegistrationMode::Jit,
        sizing: Sizing::Demand { min_idle, max },
        priority: 0,
        marked: true,
        image_mode: crate::pool::ImageMode::Plain,
        placement: crate::pool::Placement::default(),
    }
}

/// `app` with these pools.
fn pools_world(pools: Vec<PoolSpec>) -> World {
    app_world(|c| c.pools = pools)
}

fn queued(id: u64, labels: &[&str]) -> JobEvent {
    JobEvent {
        delivery: Some(format!("guid-{id}")),
        job_id: id,
        run_id: id,
        state: JobState::Queued,
        facts: JobFacts {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            runner_name: None,
            created_at: OffsetDateTime::now_utc(),
            started_at: None,
            completed_at: None,
        },
    }
}

/// Owned instances per pool, by their config key.
fn per_pool(w: &World) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for name in w.owned_instances() {
        let config = w.provider.instance(&name).expect("instance").config;
        let pool = config.get(POOL_KEY).cloned().unwrap_or_default();
        *out.entry(pool).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn demand_sizes_each_pool_and_marks_runners_on_both_sides() {
    let w = pools_world(vec![
        pool("small", &["small"], 1, 3),
        pool("large", &["large"], 0, 1),
    ]);
    for (id, labels) in [
        (1, &["self-hosted", "small"][..]),
        (2, &["self-hosted", "large"]),
        (3, &["self-hosted", "large"]),
        (4, &["self-hosted", "gpu"]),
    ] {
        w.manager.record_job(&queued(id, labels)).expect("recorded");
    }

    let report = w.manager.reconcile_demand(None).await.expect("pass");
    // small: 1 queued + min_idle 1; large: 2 queued, capped at max 1; gpu: unmatched.
    assert_eq!(
        per_pool(&w),
        BTreeMap::from([("small".into(), 2), ("large".into(), 1)])
    );
    assert_eq!(report.unmatched_jobs, 1);
    assert_eq!(
        report.waiting_jobs, 1,
        "the second large job waits for a slot"
    );
    let targets: Vec<_> = report
        .pools
        .iter()
        .map(|p| (p.pool.to_string(), p.target, p.queued, p.created))
        .collect();
    assert_eq!(
        targets,
        [("small".into(), 2, 1, 2), ("large".into(), 1, 1, 1)]
    );

    // GitHub's side names the pool too, with the default labels a JIT runner needs.
    for registration in w.registry.state.lock().runners.values() {
        let pool = w
            .provider
            .instance(&registration.name)
            .expect("instance")
            .config[POOL_KEY]
            .clone();
        assert_eq!(
            PoolName::of_labels(&registration.labels).as_str(),
            pool,
            "{registration:?}"
        );
        for label in ["self-hosted", "Linux", "X64", "app", "jammy"] {
            assert!(
                registration.labels.iter().any(|l| l == label),
                "{registration:?}"
            );
        }
        assert!(
            registration.labels.iter().any(|l| l == &pool),
            "{registration:?}"
        );
    }

    // Level-triggered: the same demand plans nothing more.
    let again = w.manager.reconcile_demand(None).await.expect("pass");
    assert!(
        again.created.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_started_job_keeps_its_runner_counted_and_a_pool_only_pass_leaves_others() {
    let w = pools_world(vec![
        pool("small", &["small"], 0, 4),
        pool("large", &["large"], 0, 4),
    ]);
    w.manager
        .record_job(&queued(1, &["small"]))
        .expect("recorded");
    w.manager
        .record_job(&queued(2, &["large"]))
        .expect("recorded");
    let small = PoolName::new("small").expect("valid");
    let report = w
        .manager
        .reconcile_demand(Some(&small))
        .await
        .expect("pass");
    assert_eq!(report.pools.len(), 1, "{report:?}");
    assert_eq!(per_pool(&w), BTreeMap::from([("small".into(), 1)]));

    // The small runner takes job 1: GitHub says busy, the job table says in progress.
    let runner = w.owned_instances().into_iter().next().expect("a runner");
    w.registry.set_busy(&runner);
    let job = queued(1, &["small"]);
    w.manager
        .record_job(&JobEvent {
            state: JobState::InProgress,
            facts: JobFacts {
                runner_name: Some(runner.clone()),
                started_at: Some(OffsetDateTime::now_utc()),
                ..job.facts
            },
            delivery: Some("guid-1b".into()),
            ..job
        })
        .expect("recorded");
    let report = w.manager.reconcile_demand(None).await.expect("pass");
    // small: busy 1, nothing queued: no new runner; large: its queued job gets one.
    assert_eq!(
        per_pool(&w),
        BTreeMap::from([("small".into(), 1), ("large".into(), 1)])
    );
    assert!(
        report.removed.is_empty(),
        "the busy runner stays: {report:?}"
    );
}

#[tokio::test]
async fn a_pool_registers_jit_runners_in_its_own_group() {
    let w = app_world(|c| {
        c.path = GitHubPath::parse("octo-org", "").expect("valid");
        let mut gpu = pool("gpu", &["gpu"], 1, 1);
        gpu.runner_group = Some("GPU runners".into());
        c.pools = vec![gpu, pool("cpu", &["cpu"], 1, 1)];
    });
    w.manager.reconcile_demand(None).await.expect("pass");
    let groups: BTreeMap<String, Option<String>> = w
        .registry
        .state
        .lock()
        .jit_groups
        .iter()
        .map(|(name, group)| {
            let pool = w.provider.instance(name).expect("instance").config[POOL_KEY].clone();
            (pool, group.clone())
        })
        .collect();
    assert_eq!(
        groups,
        BTreeMap::from([
            ("cpu".into(), Some("default".into())),
            ("gpu".into(), Some("GPU runners".into())),
        ])
    );
}

#[tokio::test]
async fn the_single_pool_form_adds_no_pool_key_or_label() {
    let w = world();
    w.reconcile(2).await;
    for name in w.owned_instances() {
        let config = w.provider.instance(&name).expect("instance").config;
        assert!(!config.contains_key(POOL_KEY), "{config:?}");
    }
    for registration in w.registry.state.lock().runners.values() {
        assert!(
            !registration
                .labels
                .iter()
                .any(|l| l.starts_with(crate::pool::POOL_LABEL_PREFIX)),
            "{registration:?}"
        );
    }
}

#[tokio::test]
async fn runner_start_carries_the_queue_time_from_the_job_table() {
    let w = app_world(|c| c.issue_metrics = true);
    let created = w.reconcile(1).await.created;
    let name = created[0].as_str();
    let queued_at = OffsetDateTime::from_unix_timestamp(1_000).expect("valid");
    for (state, started_at, guid) in [
        (JobState::Queued, None, "q"),
        (JobState::InProgress, Some(1_042), "p"),
    ] {
        let job = queued(7, &["self-hosted"]);
        w.manager
            .record_job(&JobEvent {
                delivery: Some(guid.into()),
                state,
                facts: JobFacts {
                    runner_name: started_at.map(|_| name.to_owned()),
                    created_at: queued_at,
                    started_at: started_at
                        .map(|t| OffsetDateTime::from_unix_timestamp(t).expect("valid")),
                    ..job.facts
                },
                ..job
            })
            .expect("recorded");
    }
    w.provider.write_file(
        name,
        PRE_JOB_FILE,
        r#"{"timestamp":1042,"workflow":"ci","repo":"octo/repo","github_event":"push"}"#,
    );
    w.runner_finishes(name);
    w.reconcile(0).await;
    let start = w
        .events()
        .into_iter()
        .find(|e| e["event"] == "runner_start")
        .expect("a runner_start event");
    assert_eq!(start["queue_duration"], 42, "{start}");
}
