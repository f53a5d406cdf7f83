//! Placement: table cases, properties over generated clusters, and member failure through the
//! pure plan (lost runners, stale ones when their member is back).
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::Strategy;

use crate::pool::Strategy as Fill;

use super::*;
use crate::demand::plan_fleet;
use crate::model::{InstanceType, Owner, RegistrationMode, Resources};
use crate::plan::{
    Desired, Location, MemberState, ObservedInstance, ObservedRegistration, Probe, RemovalReason,
    RunnerState,
};
use crate::pool::{PoolSpec, Sizing};
use crate::provider::{Capacity, InstanceStatus};

const GIB: u64 = 1 << 30;

fn member(name: &str, online: bool, cpus: u32, memory_gib: u64) -> Member {
    Member {
        name: name.to_owned(),
        online,
        message: String::new(),
        groups: Vec::new(),
        capacity: Some(Capacity {
            cpus,
            memory_bytes: memory_gib * GIB,
            memory_used_bytes: 0,
        }),
    }
}

fn three() -> Vec<Member> {
    ["m1", "m2", "m3"]
        .iter()
        .map(|n| member(n, true, 64, 256))
        .collect()
}

fn name(s: &str) -> PoolName {
    PoolName::new(s).expect("valid")
}

fn small() -> Demand {
    Demand {
        cpu: 1,
        memory_bytes: GIB,
    }
}

fn placement(strategy: Fill, target: Option<&str>) -> Placement {
    Placement {
        strategy,
        target: target.and_then(PlacementTarget::parse),
    }
}

/// One pool's request; by default: no runner yet, small runners, spread, default overcommit.
struct Ask<'a> {
    existing: &'a [(&'a str, Demand)],
    demand: Demand,
    placement: Placement,
    count: usize,
    overcommit: Overcommit,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Self {
            existing: &[],
            demand: small(),
            placement: Placement::default(),
            count: 0,
            overcommit: Overcommit::default(),
        }
    }
}

/// Room for exactly what the hardware has.
const EXACT: Overcommit = Overcommit {
    cpu: 1.0,
    memory: 1.0,
};

fn place_one(members: &[Member], ask: Ask<'_>) -> PoolPlacement {
    let pool = name("p");
    let existing = ask.existing.iter().map(|(m, d)| (*m, &pool, *d));
    let requests = [Request {
        pool: &pool,
        demand: ask.demand,
        placement: &ask.placement,
        count: ask.count,
    }];
    place(members, existing, &requests, ask.overcommit)
        .pop()
        .expect("one")
}

/// `count` small runners spread on `members`.
fn spread(members: &[Member], count: usize) -> PoolPlacement {
    place_one(
        members,
        Ask {
            count,
            ..Ask::default()
        },
    )
}

/// `count` small runners spread within `target` (a member or `@group`).
fn spread_to(members: &[Member], target: &str, count: usize) -> PoolPlacement {
    let placement = placement(Fill::Spread, Some(target));
    place_one(
        members,
        Ask {
            placement,
            count,
            ..Ask::default()
        },
    )
}

fn counts(p: &PoolPlacement) -> Vec<usize> {
    let per = p.per_member();
    ["m1", "m2", "m3"]
        .iter()
        .map(|m| per.get(m).copied().unwrap_or(0))
        .collect()
}

#[test]
fn spread_balances_thirty_over_three() {
    let p = spread(&three(), 30);
    assert_eq!(counts(&p), [10, 10, 10]);
    assert_eq!(p.shortfall, 0);
    // The creations of one pass alternate: the first three go to three members.
    assert_eq!(
        p.targets[..3],
        [Some("m1".into()), Some("m2".into()), Some("m3".into())]
    );
}

#[test]
fn spread_fills_the_least_loaded_first() {
    let existing = [
        ("m1", small()),
        ("m1", small()),
        ("m1", small()),
        ("m2", small()),
    ];
    let p = place_one(
        &three(),
        Ask {
            existing: &existing,
            count: 5,
            ..Ask::default()
        },
    );
    // 3,1,0 + 5 → 3,3,3.
    assert_eq!(counts(&p), [0, 2, 3]);
}

/// Members `names` with 2 threads and 256 GiB each.
fn two_threads(names: [&str; 3]) -> Vec<Member> {
    names.iter().map(|n| member(n, true, 2, 256)).collect()
}

#[test]
fn pack_fills_one_member_then_the_next() {
    // 2 threads, overcommit 1: two one-CPU runners per member.
    let members = two_threads(["m3", "m1", "m2"]);
    let placement = placement(Fill::Pack, None);
    let p = place_one(
        &members,
        Ask {
            placement,
            count: 5,
            overcommit: EXACT,
            ..Ask::default()
        },
    );
    let targets: Vec<_> = p.targets.iter().flatten().map(String::as_str).collect();
    assert_eq!(targets, ["m1", "m1", "m2", "m2", "m3"]);
}

#[test]
fn capacity_holds_with_small_members_and_the_rest_is_a_shortfall() {
    // A pool's cpu equal to a member's threads, overcommit 1: one runner per member.
    let members = two_threads(["m1", "m2", "m3"]);
    let demand = Demand {
        cpu: 2,
        memory_bytes: GIB,
    };
    let on_m2 = [("m2", demand)];
    let ask = |existing, count, overcommit| Ask {
        existing,
        demand,
        count,
        overcommit,
        ..Ask::default()
    };
    let p = place_one(&members, ask(&[], 5, EXACT));
    assert_eq!(counts(&p), [1, 1, 1]);
    assert_eq!((p.shortfall, p.reason), (2, Some(Shortfall::Full)));
    // With one already on m2, only two more fit.
    let p = place_one(&members, ask(&on_m2, 5, EXACT));
    assert_eq!(counts(&p), [1, 0, 1]);
    assert_eq!(p.shortfall, 3);
    // Overcommit 2.0 doubles the room.
    let twice = Overcommit {
        cpu: 2.0,
        memory: 1.0,
    };
    let p = place_one(&members, ask(&[], 7, twice));
    assert_eq!(counts(&p), [2, 2, 2]);
    assert_eq!(p.shortfall, 1);
}

#[test]
fn memory_counts_the_hosts_used_memory() {
    let mut m = member("m1", true, 64, 8);
    if let Some(c) = m.capacity.as_mut() {
        c.memory_used_bytes = 5 * GIB;
    }
    let demand = Demand {
        cpu: 1,
        memory_bytes: 2 * GIB,
    };
    let p = place_one(
        &[m],
        Ask {
            demand,
            count: 4,
            ..Ask::default()
        },
    );
    // 8 GiB − 5 GiB used: one 2 GiB runner.
    assert_eq!((p.targets.len(), p.shortfall), (1, 3));
}

#[test]
fn an_offline_member_or_unknown_capacity_gets_nothing() {
    let mut members = three();
    members[1].online = false;
    members[2].capacity = None;
    assert_eq!(counts(&spread(&members, 4)), [4, 0, 0]);
}

#[test]
fn targets_a_member_or_a_group() {
    let mut members = three();
    members[0].groups = vec!["gpu".into()];
    members[2].groups = vec!["gpu".into()];
    assert_eq!(counts(&spread_to(&members, "m2", 3)), [0, 3, 0]);
    assert_eq!(counts(&spread_to(&members, "@gpu", 4)), [2, 0, 2]);
    let p = spread_to(&members, "m9", 2);
    assert_eq!((p.shortfall, p.reason), (2, Some(Shortfall::NoMember)));
    members[1].online = false;
    let p = spread_to(&members, "m2", 2);
    assert_eq!((p.shortfall, p.reason), (2, Some(Shortfall::Offline)));
}

#[test]
fn pools_share_the_room_first_come_first_served() {
    let members = vec![member("m1", true, 2, 256)];
    let (a, b) = (name("a"), name("b"));
    let spread = Placement::default();
    let requests = [
        Request {
            pool: &a,
            demand: small(),
            placement: &spread,
            count: 1,
        },
        Request {
            pool: &b,
            demand: small(),
            placement: &spread,
            count: 3,
        },
    ];
    let existing: [(&str, &PoolName, Demand); 0] = [];
    let placed = place(&members, existing, &requests, EXACT);
    assert_eq!(placed[0].targets.len(), 1);
    assert_eq!((placed[1].targets.len(), placed[1].shortfall), (1, 2));
}

#[test]
fn target_parsing() {
    assert_eq!(
        PlacementTarget::parse("m1"),
        Some(PlacementTarget::Member("m1".into()))
    );
    assert_eq!(
        PlacementTarget::parse("@gpu"),
        Some(PlacementTarget::Group("gpu".into()))
    );
    assert_eq!(PlacementTarget::parse("@"), None);
    assert_eq!(PlacementTarget::parse(""), None);
    assert_eq!(PlacementTarget::Group("gpu".into()).as_target(), "@gpu");
}

// ------------------------------------------------------------------- through the fleet plan

const GRACE: Duration = Duration::from_secs(300);

fn tolerances() -> Desired {
    Desired {
        quantity: 0,
        boot_grace: GRACE,
        offline_grace: GRACE,
        max_idle_age: None,
    }
}

fn spec(pool: &str, quantity: usize, placement: Placement) -> PoolSpec {
    PoolSpec {
        name: name(pool),
        sizing: Sizing::Fixed(quantity),
        marked: true,
        ..PoolSpec::single(
            "busybox",
            InstanceType::Container,
            Resources::new(1, "1GiB", "1GiB").expect("valid"),
            Vec::new(),
            RegistrationMode::Token,
            quantity,
        )
    }
    .with_placement(placement)
}

fn runner_name(n: usize) -> crate::model::RunnerName {
    Owner::new("app", 0)
        .expect("valid")
        .parse_name(&format!("app-0-{n:08}"))
        .expect("valid")
}

/// A healthy online runner of `pool` on `member`.
fn runner(observed: &mut Observed, pool: &str, n: usize, member: &str, busy: bool) {
    observed.instances.push(ObservedInstance {
        name: runner_name(n),
        pool: name(pool),
        status: InstanceStatus::Running,
        age: Duration::from_secs(3600),
        probe: Probe::Alive,
        image: None,
        outdated: false,
        location: Some(Location::online(member)),
    });
    observed.registrations.push(ObservedRegistration {
        id: n as u64,
        name: runner_name(n),
        pool: name(pool),
        online: true,
        busy,
        offline_for: Duration::ZERO,
    });
}

fn fleet_and_placement(
    observed: &Observed,
    pools: &[PoolSpec],
    overcommit: Overcommit,
) -> (FleetPlan, Vec<PoolPlacement>) {
    let demands: Vec<_> = pools.iter().map(|p| p.demand("app")).collect();
    let fleet = plan_fleet(
        observed,
        &demands,
        &[],
        &tolerances(),
        Duration::from_secs(600),
        time::OffsetDateTime::now_utc(),
    );
    let placed = place_fleet(&fleet, observed, pools, overcommit);
    (fleet, placed)
}

/// The observation after the plan's removals and placed creations succeeded.
fn apply(
    observed: &Observed,
    fleet: &FleetPlan,
    placed: &[PoolPlacement],
    next: &mut usize,
) -> Observed {
    let removed: std::collections::BTreeSet<_> = fleet
        .pools
        .iter()
        .flat_map(|p| &p.plan.removals)
        .map(|r| (r.name.clone(), r.has_instance))
        .collect();
    let mut after = observed.clone();
    after
        .instances
        .retain(|i| !removed.contains(&(i.name.clone(), true)));
    after
        .registrations
        .retain(|r| !removed.iter().any(|(n, _)| n == &r.name));
    for (p, placement) in fleet.pools.iter().zip(placed) {
        for target in &placement.targets {
            *next += 1;
            runner(
                &mut after,
                p.pool.as_str(),
                *next,
                target.as_deref().unwrap_or("m1"),
                false,
            );
        }
    }
    after
}

#[test]
fn standalone_places_everything_without_a_target() {
    let observed = Observed::default();
    let pools = [
        spec("a", 2, Placement::default()),
        spec("b", 1, placement(Fill::Spread, Some("m2"))),
    ];
    let (_, placed) = fleet_and_placement(&observed, &pools, Overcommit::default());
    assert_eq!(placed[0].targets, [None, None]);
    assert_eq!(placed[1].targets, [None]);
    assert_eq!((placed[1].shortfall, placed[1].reason), (0, None));
}

/// Member m3 goes offline or comes back: the cluster says so, and so do its runners' locations.
fn m3_becomes(observed: &mut Observed, state: MemberState) {
    if let Some(members) = observed.members.as_mut() {
        members[2].online = !matches!(state, MemberState::Offline);
    }
    for i in &mut observed.instances {
        if i.location.as_ref().is_some_and(|l| l.member == "m3") {
            i.location = Some(Location {
                member: "m3".into(),
                state,
            });
        }
    }
}

#[test]
fn a_failed_member_is_lost_replaced_then_cleaned_when_back() {
    let pools = [spec("p", 6, Placement::default())];
    let mut observed = Observed {
        members: Some(three()),
        ..Observed::default()
    };
    for n in 0..6 {
        runner(&mut observed, "p", n, ["m1", "m2", "m3"][n % 3], n == 2);
    }
    // m3 goes offline: runners 2 (busy) and 5 (idle) are lost.
    m3_becomes(&mut observed, MemberState::Offline);
    let (fleet, placed) = fleet_and_placement(&observed, &pools, Overcommit::default());
    let plan = &fleet.pools[0].plan;
    assert_eq!(
        plan.states[&runner_name(2)],
        RunnerState::Lost { busy: true }
    );
    assert_eq!(
        plan.states[&runner_name(5)],
        RunnerState::Lost { busy: false }
    );
    assert_eq!(plan.healthy(), 4);
    assert_eq!(plan.create, 2);
    // Only the idle lost runner's registration goes; its instance is not touched.
    assert_eq!(plan.removals.len(), 1);
    let removal = &plan.removals[0];
    assert_eq!(
        (&removal.name, removal.has_instance, removal.reason),
        (&runner_name(5), false, RemovalReason::Lost)
    );
    // The replacements go to the online members, balanced: 2 + 1 and 2 + 1.
    assert_eq!(
        placed[0].per_member(),
        BTreeMap::from([("m1", 1), ("m2", 1)])
    );
    let mut next = 100;
    let mut after = apply(&observed, &fleet, &placed, &mut next);
    // Never above quantity by more than the lost runners.
    assert!(after.instances.len() <= 6 + 2);
    // The second pass plans nothing.
    let (fleet2, placed2) = fleet_and_placement(&after, &pools, Overcommit::default());
    assert!(fleet2.is_empty(), "{fleet2:?}");
    assert!(placed2[0].targets.is_empty());

    // m3 is back: its runners are stale. The idle one goes (instance and all); the busy one
    // stays busy (never cut) and counts again, so an idle runner is scaled down.
    m3_becomes(&mut after, MemberState::Returned);
    let (fleet3, placed3) = fleet_and_placement(&after, &pools, Overcommit::default());
    let plan = &fleet3.pools[0].plan;
    assert_eq!(
        plan.states[&runner_name(5)],
        RunnerState::Remove(RemovalReason::Stale)
    );
    assert_eq!(plan.states[&runner_name(2)], RunnerState::Busy);
    assert!(plan
        .removals
        .iter()
        .any(|r| r.name == runner_name(5) && r.has_instance && r.reason == RemovalReason::Stale));
    assert_eq!(plan.healthy(), 7);
    assert_eq!(plan.create, 0);
    assert!(placed3[0].targets.is_empty());
}

#[test]
fn flush_never_calls_an_offline_member() {
    let mut observed = Observed {
        members: Some(three()),
        ..Observed::default()
    };
    runner(&mut observed, "p", 1, "m1", false);
    runner(&mut observed, "p", 2, "m3", false);
    runner(&mut observed, "p", 3, "m3", true);
    for i in &mut observed.instances {
        if i.location.as_ref().is_some_and(|l| l.member == "m3") {
            i.location = Some(Location {
                member: "m3".into(),
                state: MemberState::Offline,
            });
        }
    }
    let removals = crate::plan::plan_flush(&observed, true, GRACE);
    let by_name: BTreeMap<_, _> = removals.iter().map(|r| (&r.name, r.has_instance)).collect();
    assert_eq!(by_name.get(&runner_name(1)), Some(&true));
    assert_eq!(by_name.get(&runner_name(2)), Some(&false));
    assert_eq!(
        by_name.get(&runner_name(3)),
        None,
        "a busy lost runner is left alone"
    );
}

// ------------------------------------------------------------------------------ properties

fn arb_members() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::vec((any::<bool>(), 1u32..8, 1u64..16, 0u64..4, 0usize..3), 1..6).prop_map(
        |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (online, cpus, mem, used, group))| Member {
                    name: format!("m{i}"),
                    online: online || i == 0,
                    message: String::new(),
                    groups: vec![format!("g{group}")],
                    capacity: Some(Capacity {
                        cpus,
                        memory_bytes: mem * GIB,
                        memory_used_bytes: used * GIB / 2,
                    }),
                })
                .collect()
        },
    )
}

fn arb_placement() -> impl Strategy<Value = Placement> {
    (
        prop_oneof![Just(Fill::Spread), Just(Fill::Pack)],
        prop_oneof![
            Just(None),
            (0usize..6).prop_map(|i| Some(format!("m{i}"))),
            (0usize..3).prop_map(|g| Some(format!("@g{g}"))),
        ],
    )
        .prop_map(|(strategy, target)| Placement {
            strategy,
            target: target.as_deref().and_then(PlacementTarget::parse),
        })
}

proptest! {
    #[test]
    fn never_a_member_without_room_never_offline_never_above_the_count(
        members in arb_members(),
        existing in prop::collection::vec((0usize..6, 1u32..3, 0u64..3), 0..20),
        requests in prop::collection::vec((arb_placement(), 1u32..4, 0u64..3, 0usize..12), 1..4),
        cpu_ratio in 0.5f64..3.0,
        memory_ratio in 0.5f64..2.0,
    ) {
        let overcommit = Overcommit { cpu: cpu_ratio, memory: memory_ratio };
        let names: Vec<PoolName> = (0..requests.len()).map(|i| name(&format!("p{i}"))).collect();
        let existing: Vec<(String, Demand)> = existing
            .into_iter()
            .map(|(m, cpu, mem)| (format!("m{m}"), Demand { cpu, memory_bytes: mem * GIB / 2 }))
            .collect();
        let reqs: Vec<Request<'_>> = requests
            .iter()
            .zip(&names)
            .map(|((placement, cpu, mem, count), pool)| Request {
                pool,
                demand: Demand { cpu: *cpu, memory_bytes: mem * GIB / 2 },
                placement,
                count: *count,
            })
            .collect();
        let placed = place(
            &members,
            existing.iter().map(|(m, d)| (m.as_str(), &names[0], *d)),
            &reqs,
            overcommit,
        );
        // Reservations per member after placement.
        let mut used: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (m, d) in &existing {
            let e = used.entry(m.as_str()).or_default();
            e.0 += u64::from(d.cpu);
            e.1 += d.memory_bytes;
        }
        for (request, placement) in reqs.iter().zip(&placed) {
            prop_assert_eq!(placement.targets.len() + placement.shortfall, request.count);
            prop_assert_eq!(placement.shortfall > 0, placement.reason.is_some());
            for target in &placement.targets {
                let target = target.as_deref().expect("a member on a cluster");
                let member = members.iter().find(|m| m.name == target).expect("a member");
                prop_assert!(member.online, "placed on offline {target}");
                prop_assert!(allows(request.placement.target.as_ref(), member));
                let e = used.entry(target).or_default();
                e.0 += u64::from(request.demand.cpu);
                e.1 += request.demand.memory_bytes;
            }
        }
        for member in &members {
            let (cpu, memory) = used.get(member.name.as_str()).copied().unwrap_or_default();
            let placed_here = placed
                .iter()
                .any(|p| p.targets.iter().flatten().any(|t| t == &member.name));
            if placed_here {
                let (cpu_limit, memory_limit) = limit(member, overcommit).expect("capacity");
                prop_assert!(cpu <= cpu_limit, "{} cpu {cpu} > {cpu_limit}", member.name);
                prop_assert!(memory <= memory_limit, "{} memory over", member.name);
            }
        }
    }

    #[test]
    fn spread_is_even_when_room_allows_and_pack_fills_in_order(
        online in prop::collection::vec(any::<bool>(), 1..6),
        count in 0usize..60,
        existing in prop::collection::vec(0usize..6, 0..10),
    ) {
        let members: Vec<Member> = online
            .iter()
            .enumerate()
            .map(|(i, &on)| member(&format!("m{i}"), on || i == 0, 1024, 4096))
            .collect();
        let pool = name("p");
        let existing_members: Vec<String> = existing
            .iter()
            .filter(|&&m| m < members.len())
            .map(|m| format!("m{m}"))
            .collect();
        let spread = Placement::default();
        let request = [Request { pool: &pool, demand: small(), placement: &spread, count }];
        let placed = place(
            &members,
            existing_members.iter().map(|m| (m.as_str(), &pool, small())),
            &request,
            Overcommit::default(),
        );
        prop_assert_eq!(placed[0].targets.len(), count);
        // After placing, max − min over online members ≤ 1, unless the existing spread was
        // already wider than the creations could even out.
        let mut totals: BTreeMap<&str, usize> = members
            .iter()
            .filter(|m| m.online)
            .map(|m| (m.name.as_str(), 0))
            .collect();
        for m in existing_members.iter().map(String::as_str).chain(
            placed[0].targets.iter().flatten().map(String::as_str),
        ) {
            if let Some(n) = totals.get_mut(m) {
                *n += 1;
            }
        }
        let (max, min) = (
            totals.values().copied().max().unwrap_or(0),
            totals.values().copied().min().unwrap_or(0),
        );
        let before_max = existing_members.len();
        if count >= before_max * totals.len() {
            prop_assert!(max - min <= 1, "{totals:?}");
        }
        // Pack: each member is used only once every earlier online member is full.
        let members: Vec<Member> = (0..online.len())
            .map(|i| member(&format!("m{i}"), online[i] || i == 0, 2, 4096))
            .collect();
        let pack = Placement { strategy: Fill::Pack, target: None };
        let request = [Request { pool: &pool, demand: small(), placement: &pack, count }];
        let none: [(&str, &PoolName, Demand); 0] = [];
        let placed = place(&members, none, &request, EXACT);
        let order: Vec<usize> = placed[0]
            .targets
            .iter()
            .flatten()
            .map(|t| t[1..].parse().expect("m<i>"))
            .collect();
        prop_assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        let online_count = members.iter().filter(|m| m.online).count();
        prop_assert_eq!(order.len(), count.min(2 * online_count));
    }
}
