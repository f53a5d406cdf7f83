//! Passes on a simulated cluster (SIMULATION: ordering and accounting only; the real cluster
//! is in `crates/cli/tests/e2e_cluster_placement.rs`): creations get their member from the
//! plan, a member that goes offline is never called and its runners are replaced, and its
//! stale runners are cleaned when it is back.

use super::*;
use crate::provider::{Capacity, Member};

fn member(name: &str, cpus: u32) -> Member {
    Member {
        name: name.to_owned(),
        online: true,
        message: String::new(),
        groups: Vec::new(),
        capacity: Some(Capacity {
            cpus,
            memory_bytes: 256 << 30,
            memory_used_bytes: 0,
        }),
    }
}

fn cluster(cpus: u32, edit: impl FnOnce(&mut ManagerConfig)) -> World {
    world_on("app", 0, edit, true, |p| {
        p.with_members(vec![
            member("m1", cpus),
            member("m2", cpus),
            member("m3", cpus),
        ])
    })
}

fn on(w: &World, member: &str) -> BTreeSet<String> {
    w.owned_instances()
        .into_iter()
        .filter(|n| w.provider.instance(n).and_then(|i| i.location).as_deref() == Some(member))
        .collect()
}

#[tokio::test]
async fn creations_are_spread_by_the_plan() {
    let w = cluster(64, |_| {});
    let report = w.reconcile(9).await;
    assert_eq!(report.created.len(), 9);
    assert_eq!(
        w.provider.per_member(),
        BTreeMap::from([("m1".into(), 3), ("m2".into(), 3), ("m3".into(), 3)])
    );
    assert!(w.reconcile(9).await.created.is_empty());
}

#[tokio::test]
async fn pack_fills_in_order_and_capacity_limits_hold() {
    // 2 threads a member, overcommit 1: one 2-CPU runner per member.
    let w = cluster(2, |c| {
        c.placement.strategy = crate::pool::Strategy::Pack;
        c.overcommit = crate::placement::Overcommit {
            cpu: 1.0,
            memory: 1.0,
        };
    });
    let report = w.reconcile(5).await;
    assert_eq!(report.created.len(), 3);
    assert_eq!(report.pools[0].shortfall, 2);
    assert_eq!(
        report.pools[0].shortfall_reason,
        Some(crate::placement::Shortfall::Full)
    );
    assert_eq!(report.requeue_after, Some(SHORTFALL_REQUEUE));
    assert_eq!(w.provider.per_member().values().max(), Some(&1));
}

#[tokio::test]
async fn a_failed_member_is_replaced_never_called_and_cleaned_when_back() {
    let w = cluster(64, |_| {});
    w.reconcile(6).await;
    let lost = on(&w, "m3");
    assert_eq!(lost.len(), 2);
    // One of m3's runners runs a job.
    let busy = lost.iter().next().cloned().expect("one");
    w.registry.set_busy(&busy);
    w.provider.set_member_online("m3", false);
    let calls_before = w.provider.calls().len();
    let execs_before = w.provider.execs().len();

    let report = w.reconcile(6).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.created.len(), 2, "the lost runners are replaced");
    assert_eq!(report.counts.lost, 2);
    assert_eq!(report.pools[0].lost_busy.len(), 1);
    assert_eq!(report.pools[0].lost_busy[0].as_str(), busy);
    // Nothing was asked of m3: no exec, no delete.
    let calls = &w.provider.calls()[calls_before..];
    assert!(
        calls.iter().all(|c| !lost.iter().any(|n| c.ends_with(n))),
        "{calls:?}"
    );
    assert!(w.provider.execs()[execs_before..]
        .iter()
        .all(|e| !lost.contains(&e.instance)));
    // The idle lost runner's registration went; the busy one's stays.
    let names = w.registry.names();
    assert!(names.contains(&busy));
    assert_eq!(lost.iter().filter(|n| names.contains(*n)).count(), 1);
    // Never above quantity by more than the lost runners; the next pass plans nothing.
    assert_eq!(w.owned_instances().len(), 8);
    let again = w.reconcile(6).await;
    assert!(again.created.is_empty() && again.removed.is_empty());

    // m3 is back: its idle stale runner goes (instance too); the busy one is never cut and
    // counts again, so an idle runner elsewhere is scaled down.
    w.provider.set_member_online("m3", true);
    let report = w.reconcile(6).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let idle_lost: Vec<_> = lost.iter().filter(|n| **n != busy).collect();
    assert!(report
        .removed
        .iter()
        .any(|(n, r)| n.as_str() == idle_lost[0] && *r == RemovalReason::Stale));
    assert_eq!(on(&w, "m3"), BTreeSet::from([busy.clone()]));
    assert_eq!(report.counts.lost, 0);
    assert_eq!(w.owned_instances().len(), 6);
    let again = w.reconcile(6).await;
    assert!(again.created.is_empty() && again.removed.is_empty());
}
