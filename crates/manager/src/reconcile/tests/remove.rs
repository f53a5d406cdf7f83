//! Removals: registration first, busy runners kept, jobs looked for inside, flush modes.

use super::*;
use crate::reconcile::remove::needs_quiesce;

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
async fn finished_runner_is_not_a_crash() {
    let w = app_world(|c| c.issue_metrics = true);
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
    w.registry.job_inside(created[0].as_str());
    let before = w.provider.exec_count();
    let report = w.reconcile(0).await;
    assert_eq!(report.skipped_busy, vec![created[0].clone()], "{report:?}");
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(w.provider.instance(created[0].as_str()).is_some());
    assert!(w.registry.names().contains(created[0].as_str()));
    // One look per removal candidate, nothing else.
    assert_eq!(w.provider.exec_count() - before, 3);
    assert!(!w.registry.was_deleted(created[0].as_str()));
}

/// The same for an idle-only flush; a flush of busy runners stops them regardless.
#[tokio::test]
async fn idle_flush_keeps_a_runner_with_a_job_inside() {
    let w = world();
    let created = w.reconcile(2).await.created;
    w.registry.job_inside(created[1].as_str());
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
        assert_eq!(needs_quiesce(reason, mode), looks, "{reason:?} {mode:?}");
    }
}
