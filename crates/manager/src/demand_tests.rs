//! Routing and targets: table cases, and properties over generated fleets and job queues.
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::model::Owner;
use crate::plan::{ObservedInstance, ObservedRegistration, Probe, RemovalReason};
use crate::provider::InstanceStatus;

const GRACE: Duration = Duration::from_secs(300);
const STALE: Duration = Duration::from_secs(600);

fn tolerances() -> Desired {
    Desired::with_grace(0, GRACE)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid")
}

fn pool(name: &str, labels: &[&str], min_idle: usize, max: usize, priority: i32) -> PoolDemand {
    PoolDemand {
        name: PoolName::new(name).expect("valid"),
        sizing: Sizing::Demand { min_idle, max },
        priority,
        labels: ["self-hosted", "linux", "x64"]
            .iter()
            .chain(labels)
            .map(|l| l.to_ascii_lowercase())
            .collect::<BTreeSet<_>>(),
    }
}

fn job(id: u64, labels: &[&str], age_secs: i64) -> QueuedJob {
    QueuedJob {
        id,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        created_at: now() - time::Duration::seconds(age_secs),
    }
}

/// A healthy runner of `pool`, numbered `n`: online, busy or idle.
fn runner(observed: &mut Observed, pool: &str, n: u32, busy: bool) {
    let name = Owner::new("app", 0)
        .expect("valid")
        .parse_name(&format!("app-0-{n:08}"))
        .expect("valid");
    let pool = PoolName::new(pool).expect("valid");
    observed.instances.push(ObservedInstance {
        name: name.clone(),
        pool: pool.clone(),
        status: InstanceStatus::Running,
        age: Duration::from_secs(3600),
        probe: Probe::Alive,
        image: None,
        outdated: false,
        location: None,
    });
    observed.registrations.push(ObservedRegistration {
        id: u64::from(n),
        name,
        pool,
        online: true,
        busy,
        offline_for: Duration::ZERO,
    });
}

/// Plans with the test tolerances, stale after [`STALE`], at [`now`].
fn fleet(observed: &Observed, pools: &[PoolDemand], jobs: &[QueuedJob]) -> FleetPlan {
    plan_fleet(observed, pools, jobs, &tolerances(), STALE, now())
}

fn targets(plan: &FleetPlan) -> Vec<(String, usize, usize)> {
    plan.pools
        .iter()
        .map(|p| (p.pool.to_string(), p.target, p.plan.create))
        .collect()
}

/// Plans as [`fleet`] and checks each pool's `(name, target, create)`.
#[track_caller]
fn planned(
    observed: &Observed,
    pools: &[PoolDemand],
    jobs: &[QueuedJob],
    expected: &[(&str, usize, usize)],
) -> FleetPlan {
    let plan = fleet(observed, pools, jobs);
    let expected: Vec<(String, usize, usize)> = expected
        .iter()
        .map(|&(pool, target, create)| (pool.to_owned(), target, create))
        .collect();
    assert_eq!(targets(&plan), expected);
    plan
}

#[test]
fn an_empty_queue_keeps_min_idle_per_pool() {
    let pools = [
        pool("small", &["small"], 2, 10, 0),
        pool("large", &["large"], 0, 5, 0),
    ];
    planned(
        &Observed::default(),
        &pools,
        &[],
        &[("small", 2, 2), ("large", 0, 0)],
    );
}

#[test]
fn jobs_go_to_the_pool_whose_labels_they_all_match() {
    let pools = [
        pool("small", &["small"], 0, 10, 0),
        pool("large", &["large"], 0, 10, 0),
    ];
    let jobs = [
        job(1, &["self-hosted", "small"], 5),
        job(2, &["self-hosted", "LARGE"], 5),
        job(3, &["self-hosted", "large"], 5),
        job(4, &["self-hosted", "gpu"], 5),
        job(5, &["self-hosted"], 5),
    ];
    // Job 5 matches both at equal priority: the name decides ("large" < "small").
    let plan = planned(
        &Observed::default(),
        &pools,
        &jobs,
        &[("small", 1, 1), ("large", 3, 3)],
    );
    assert_eq!(plan.unmatched, [4]);
    assert!(plan.waiting.is_empty());
}

#[test]
fn higher_priority_first_then_the_next_pool_when_full() {
    let pools = [
        pool("cheap", &["x"], 0, 2, 10),
        pool("spare", &["x"], 0, 10, 0),
    ];
    let jobs: Vec<_> = (1..=5).map(|i| job(i, &["x"], 5)).collect();
    planned(
        &Observed::default(),
        &pools,
        &jobs,
        &[("cheap", 2, 2), ("spare", 3, 3)],
    );
}

#[test]
fn a_job_any_pool_can_take_leaves_room_for_one_only_a_pool_can_take() {
    // `both` is older and fits either pool; it would take small's last slot, and `small` (which
    // only small can run) would wait while large has room.
    let pools = [
        pool("small", &["small"], 0, 1, 10),
        pool("large", &["large"], 0, 1, 0),
    ];
    let jobs = [job(1, &["self-hosted"], 50), job(2, &["small"], 5)];
    let plan = planned(
        &Observed::default(),
        &pools,
        &jobs,
        &[("small", 1, 1), ("large", 1, 1)],
    );
    assert!(plan.waiting.is_empty(), "{:?}", plan.waiting);
}

#[test]
fn busy_runners_take_room_and_count_toward_the_target() {
    let pools = [pool("small", &["small"], 1, 3, 0)];
    let mut observed = Observed::default();
    runner(&mut observed, "small", 1, true);
    runner(&mut observed, "small", 2, true);
    let jobs = [job(1, &["small"], 5), job(2, &["small"], 4)];
    let plan = planned(&observed, &pools, &jobs, &[("small", 3, 1)]);
    assert_eq!(plan.waiting, [2]);
}

#[test]
fn a_stale_job_gets_a_runner_of_its_own_within_max() {
    let pools = [pool("small", &["small"], 1, 10, 0)];
    let mut observed = Observed::default();
    runner(&mut observed, "small", 1, false);
    runner(&mut observed, "small", 2, false);
    planned(
        &observed,
        &pools,
        &[job(1, &["small"], 5)],
        &[("small", 2, 0)],
    );
    planned(
        &observed,
        &pools,
        &[job(1, &["small"], 700)],
        &[("small", 3, 1)],
    );
}

#[test]
fn a_removed_pool_drains_sparing_busy_runners() {
    let pools = [pool("small", &["small"], 0, 10, 0)];
    let mut observed = Observed::default();
    runner(&mut observed, "old", 1, true);
    runner(&mut observed, "old", 2, false);
    let plan = fleet(&observed, &pools, &[]);
    let old = plan.pool("old").expect("draining pool planned");
    assert!(old.draining);
    assert_eq!(old.target, 0);
    assert_eq!(old.busy, 1);
    assert_eq!(
        old.plan
            .removals
            .iter()
            .map(|r| (r.name.to_string(), r.reason))
            .collect::<Vec<_>>(),
        [("app-0-00000002".to_owned(), RemovalReason::ScaleDown)]
    );
}

#[test]
fn a_registration_follows_its_instance_pool() {
    let mut observed = Observed::default();
    runner(&mut observed, "small", 1, false);
    observed.registrations[0].pool = PoolName::default_pool();
    let parts = partition(&observed);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        parts[&PoolName::new("small").expect("valid")]
            .registrations
            .len(),
        1
    );
}

#[test]
fn a_fixed_pool_keeps_its_quantity_whatever_the_queue() {
    let pools = [PoolDemand {
        sizing: Sizing::Fixed(3),
        ..pool("default", &[], 0, 0, 0)
    }];
    let jobs: Vec<_> = (1..=5).map(|i| job(i, &["self-hosted"], 5)).collect();
    planned(&Observed::default(), &pools, &jobs, &[("default", 3, 3)]);
}

// ------------------------------------------------------------------------------- properties

const POOLS: [&str; 3] = ["a", "b", "c"];

fn arb_fleet() -> impl Strategy<Value = (Observed, Vec<PoolDemand>, Vec<QueuedJob>)> {
    let pools = proptest::collection::vec((0usize..4, 0usize..8, -1i32..2), 3).prop_map(|v| {
        v.into_iter()
            .zip(POOLS)
            .map(|((min_idle, extra, priority), name)| {
                pool(
                    name,
                    &[name, "shared"],
                    min_idle,
                    min_idle + extra,
                    priority,
                )
            })
            .collect::<Vec<_>>()
    });
    // Runners of the three pools and of a removed one ("z"), busy or not.
    let runners = proptest::collection::vec((0usize..4, any::<bool>()), 0..16);
    let jobs = proptest::collection::vec((0usize..5, 0i64..1200), 0..30);
    (pools, runners, jobs).prop_map(|(pools, runners, jobs)| {
        let mut observed = Observed::default();
        for (i, (p, busy)) in runners.into_iter().enumerate() {
            let name = POOLS.get(p).copied().unwrap_or("z");
            runner(&mut observed, name, i as u32, busy);
        }
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(i, (which, age))| {
                let labels: &[&str] = match which {
                    0 => &["a"],
                    1 => &["b"],
                    2 => &["c"],
                    3 => &["shared"],
                    _ => &["gpu"],
                };
                job(i as u64, labels, age)
            })
            .collect();
        (observed, pools, jobs)
    })
}

/// The observation after executing `plan`: removals gone, creations present and idle.
fn apply(observed: &Observed, fleet: &FleetPlan) -> Observed {
    let removed: BTreeSet<_> = fleet
        .pools
        .iter()
        .flat_map(|p| p.plan.removals.iter().map(|r| &r.name))
        .collect();
    let mut next = observed.without(&removed);
    let mut n = 50_000;
    for pool in &fleet.pools {
        for _ in 0..pool.plan.create {
            n += 1;
            runner(&mut next, pool.pool.as_str(), n, false);
        }
    }
    next
}

proptest! {
    #[test]
    fn never_above_max_never_a_busy_runner_removed_and_idempotent(
        (observed, pools, jobs) in arb_fleet()
    ) {
        let planned = fleet(&observed, &pools, &jobs);
        let busy: BTreeSet<_> = observed
            .registrations
            .iter()
            .filter(|r| r.busy)
            .map(|r| r.name.clone())
            .collect();
        let parts = partition(&observed);
        for p in &planned.pools {
            for removal in &p.plan.removals {
                prop_assert!(!busy.contains(&removal.name), "busy {} removed", removal.name);
            }
            let before = parts.get(&p.pool).map_or(0, |o| o.instances.len());
            let after = before - p.plan.removals.len() + p.plan.create;
            match pools.iter().find(|c| c.name == p.pool) {
                // Never above max (unless busy runners alone already are: none is created).
                Some(config) => prop_assert!(
                    after <= config.sizing.max().max(p.busy),
                    "{}: {after} runners, max {}", p.pool, config.sizing.max()
                ),
                None => prop_assert_eq!(p.plan.create, 0),
            }
            prop_assert!(p.target <= pools.iter().find(|c| c.name == p.pool).map_or(0, |c| c.sizing.max()));
        }
        // Every job is routed, waiting or unmatched, once.
        let routed: usize = planned.pools.iter().map(|p| p.queued).sum();
        prop_assert_eq!(routed + planned.waiting.len() + planned.unmatched.len(), jobs.len());
        // A second pass over the result plans nothing when the jobs are unchanged and no
        // busy runner exceeds its pool's max.
        let next = apply(&observed, &planned);
        let again = fleet(&next, &pools, &jobs);
        let over = planned.pools.iter().any(|p| {
            pools.iter().find(|c| c.name == p.pool).is_some_and(|c| p.busy > c.sizing.max())
        });
        if !over {
            for p in &again.pools {
                prop_assert!(
                    p.plan.is_empty() || (p.draining && p.plan.removals.is_empty()),
                    "second pass on {} plans {:?}", p.pool, p.plan
                );
            }
        }
    }
}
