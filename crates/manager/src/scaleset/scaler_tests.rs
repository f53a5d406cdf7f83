use proptest::prelude::*;

use super::*;
use crate::scaleset::JobRef;

fn job(id: &str) -> JobRef {
    JobRef {
        job_id: id.to_owned(),
        runner_request_id: id.len() as i64,
        ..JobRef::default()
    }
}

fn stats(assigned: u32) -> Statistics {
    Statistics {
        assigned_jobs: assigned,
        ..Statistics::default()
    }
}

fn message(assigned: u32, jobs: Vec<JobEvent>) -> QueueMessage {
    QueueMessage {
        id: 1,
        statistics: stats(assigned),
        jobs,
    }
}

fn started(id: &str, runner: &str) -> JobEvent {
    JobEvent::Started(Started {
        job: job(id),
        runner_id: 7,
        runner_name: runner.to_owned(),
    })
}

fn completed(id: &str, runner: Option<&str>) -> JobEvent {
    JobEvent::Completed(Completed {
        job: job(id),
        runner: runner.map(|r| (7, r.to_owned())),
        result: "succeeded".to_owned(),
    })
}

const LIMITS: Limits = Limits {
    min_idle: 1,
    max: 5,
};

#[test]
fn desired_is_min_idle_plus_assigned_within_max() {
    // (min_idle, max, assigned statistic, desired)
    let table = [
        (0, 10, 0, 0),
        (1, 10, 0, 1),
        (1, 10, 3, 4),
        (2, 5, 10, 5),
        (0, 0, 4, 0),
        (3, 3, 0, 3),
    ];
    for (min_idle, max, assigned, want) in table {
        let state = ScalerState::new(stats(assigned));
        assert_eq!(
            state.desired(Limits { min_idle, max }),
            want,
            "min_idle {min_idle} max {max} assigned {assigned}"
        );
    }
}

#[test]
fn statistics_reading_zero_never_drop_assigned_or_busy_jobs() {
    let mut state = ScalerState::default();
    // The ARC bug: JobAssigned arrives with statistics all 0.
    let d = state.apply(
        &message(
            0,
            vec![JobEvent::Assigned(job("a")), JobEvent::Assigned(job("b"))],
        ),
        LIMITS,
    );
    assert_eq!(d.desired, 3, "two assigned jobs plus one idle");
    // One starts; statistics still 0.
    let d = state.apply(&message(0, vec![started("a", "r-1")]), LIMITS);
    assert_eq!(d.desired, 3);
    assert_eq!(state.busy.get("r-1").map(String::as_str), Some("a"));
    // Both complete: back to min_idle.
    let d = state.apply(
        &message(0, vec![completed("a", Some("r-1")), completed("b", None)]),
        LIMITS,
    );
    assert_eq!(d.desired, 1);
    assert!(state.busy.is_empty() && state.assigned.is_empty());
    assert_eq!(d.completed.len(), 2);
    assert_eq!(d.completed[0].runner, Some((7, "r-1".to_owned())));
}

#[test]
fn started_and_completed_in_one_batch_leave_the_runner_not_busy() {
    let mut state = ScalerState::default();
    let d = state.apply(
        &message(1, vec![started("a", "r-1"), completed("a", Some("r-1"))]),
        LIMITS,
    );
    assert!(state.busy.is_empty());
    assert_eq!(d.started.len(), 1);
    assert_eq!(d.completed.len(), 1);
    // The statistics still say 1 assigned: the count follows them.
    assert_eq!(d.desired, 2);
}

#[test]
fn available_jobs_are_acquired_only_with_room() {
    let mut state = ScalerState::default();
    let available: Vec<JobEvent> = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg"]
        .iter()
        .map(|id| JobEvent::Available(job(id)))
        .collect();
    // max 5, 3 assigned already: room for 2.
    let d = state.apply(&message(3, available.clone()), LIMITS);
    assert_eq!(d.acquire, vec![1, 2]);
    state.acquired(&d.acquire);
    // Full: nothing acquired; the rest stay pending.
    let d = state.apply(&message(5, available), LIMITS);
    assert!(d.acquire.is_empty());
    assert_eq!(
        state.available.len(),
        7,
        "the re-offered jobs are pending again"
    );
    // Room again (an empty poll's statistics): the pending ones are acquired.
    state.statistics = stats(3);
    assert_eq!(state.acquirable(LIMITS), vec![1, 2]);
}

#[test]
fn a_completion_without_start_clears_the_job_of_a_busy_runner() {
    let mut state = ScalerState::default();
    state.apply(&message(1, vec![started("a", "r-1")]), LIMITS);
    state.apply(&message(0, vec![completed("a", None)]), LIMITS);
    assert!(state.busy.is_empty());
    assert_eq!(state.desired(LIMITS), 1);
}

fn arb_event() -> impl Strategy<Value = JobEvent> {
    let id = prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h"]);
    let runner = prop::sample::select(vec!["r-1", "r-2", "r-3", "r-4"]);
    prop_oneof![
        id.clone().prop_map(|i| JobEvent::Available(job(i))),
        id.clone().prop_map(|i| JobEvent::Assigned(job(i))),
        (id.clone(), runner.clone()).prop_map(|(i, r)| started(i, r)),
        (id, prop::option::of(runner)).prop_map(|(i, r)| completed(i, r)),
    ]
}

proptest! {
    /// Never above max; never below the busy runners or the jobs seen assigned (within max);
    /// acquisitions never take the set above max.
    #[test]
    fn never_above_max_never_below_busy_or_assigned(
        min_idle in 0usize..4,
        max in 0usize..12,
        batches in prop::collection::vec(
            (0u32..15, 0u32..4, prop::collection::vec(arb_event(), 0..12)),
            1..10,
        ),
    ) {
        let limits = Limits { min_idle, max };
        let mut state = ScalerState::default();
        for (assigned, acquired, jobs) in batches {
            let msg = QueueMessage {
                id: 1,
                statistics: Statistics {
                    assigned_jobs: assigned,
                    acquired_jobs: acquired,
                    ..Statistics::default()
                },
                jobs,
            };
            let d = state.apply(&msg, limits);
            let before = (assigned as usize + acquired as usize).max(state.assigned.len());
            prop_assert!(d.desired <= max);
            prop_assert!(d.desired >= state.busy.len().min(max));
            prop_assert!(d.desired >= state.assigned.len().min(max));
            prop_assert!(d.desired >= (assigned as usize).min(max));
            prop_assert!(d.desired >= min_idle.min(max));
            prop_assert!(d.acquire.is_empty() || before + d.acquire.len() <= max);
            state.acquired(&d.acquire);
            // Idempotent: the same state gives the same count.
            prop_assert_eq!(state.desired(limits), d.desired);
        }
    }
}
