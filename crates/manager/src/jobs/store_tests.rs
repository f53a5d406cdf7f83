//! Tests of the job table: lifecycle, out-of-order and repeated deliveries, persistence,
//! ordering, expiry and pruning, schema versions, two connections on one file.
use super::*;
use proptest::prelude::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 12:00:00 UTC);

fn at(minutes: i64) -> OffsetDateTime {
    T0 + time::Duration::minutes(minutes)
}

/// A delivery for job `id` in `state`, with the fields GitHub sends for that state.
fn event(guid: &str, id: u64, state: JobState) -> JobEvent {
    let started = state >= JobState::InProgress;
    JobEvent {
        delivery: Some(guid.to_owned()),
        job_id: id,
        run_id: 1000 + id,
        state,
        facts: JobFacts {
            labels: vec!["self-hosted".to_owned(), "linux".to_owned()],
            runner_name: started.then(|| "runner-1".to_owned()),
            created_at: T0,
            started_at: started.then(|| at(1)),
            completed_at: (state == JobState::Completed).then(|| at(5)),
        },
    }
}

/// Records [`event`]`(guid, id, state)` at `at(minutes)`.
fn record(store: &JobStore, guid: &str, id: u64, state: JobState, minutes: i64) -> Recorded {
    store
        .record(&event(guid, id, state), at(minutes))
        .expect("record")
}

/// The job of an applied delivery, which found it in state `previous`.
fn applied(r: Recorded, previous: Option<JobState>) -> Job {
    match r {
        Recorded::Applied { previous: p, job } if p == previous => job,
        other => panic!("not applied over {previous:?}: {other:?}"),
    }
}

fn state_of(store: &JobStore, id: u64) -> Option<JobState> {
    store.get(id).expect("get").map(|j| j.state)
}

#[test]
fn lifecycle_queued_in_progress_completed() {
    let store = JobStore::open_in_memory().expect("open");
    let job = applied(record(&store, "a", 1, JobState::Queued, 0), None);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.run_id, 1001);
    assert_eq!(job.facts.runner_name, None);
    assert_eq!(job.updated_at, at(0));
    assert_eq!(store.counts().expect("counts"), (1, 0, 0));
    assert_eq!(store.queued().expect("queued").len(), 1);

    let job = applied(
        record(&store, "b", 1, JobState::InProgress, 1),
        Some(JobState::Queued),
    );
    assert_eq!(job.state, JobState::InProgress);
    assert_eq!(job.facts.runner_name.as_deref(), Some("runner-1"));
    assert_eq!(job.queue_time(), Some(std::time::Duration::from_secs(60)));
    assert_eq!(store.counts().expect("counts"), (0, 1, 0));
    assert!(store.queued().expect("queued").is_empty());

    let job = applied(
        record(&store, "c", 1, JobState::Completed, 5),
        Some(JobState::InProgress),
    );
    assert_eq!(job.facts.completed_at, Some(at(5)));
    assert_eq!(job.updated_at, at(5));
    assert_eq!(store.counts().expect("counts"), (0, 0, 1));
    assert_eq!(store.get(1).expect("get"), Some(job.clone()));
    assert_eq!(
        store.job_on_runner("runner-1").expect("on runner"),
        Some(job)
    );
    assert_eq!(store.job_on_runner("runner-2").expect("on runner"), None);
    assert_eq!(store.get(2).expect("get"), None);
}

/// Where both have a value, a newer delivery's wins and an older one's only fills what the
/// table lacks; `created_at` stays the table's either way.
#[test]
fn merged_facts_take_the_newer_and_fill_from_the_older() {
    let labels = |l: &str| vec![l.to_owned()];
    let table = JobFacts {
        labels: labels("a"),
        runner_name: Some("r1".to_owned()),
        created_at: T0,
        started_at: None,
        completed_at: Some(at(5)),
    };
    let delivery = JobFacts {
        labels: labels("b"),
        runner_name: Some("r2".to_owned()),
        created_at: at(1),
        started_at: Some(at(2)),
        completed_at: None,
    };
    assert_eq!(
        table.merged(&delivery, true),
        JobFacts {
            created_at: T0,
            completed_at: Some(at(5)),
            ..delivery.clone()
        }
    );
    assert_eq!(
        table.merged(&delivery, false),
        JobFacts {
            started_at: Some(at(2)),
            ..table.clone()
        }
    );
    let unlabelled = |f: &JobFacts| JobFacts {
        labels: Vec::new(),
        ..f.clone()
    };
    assert_eq!(unlabelled(&table).merged(&delivery, false).labels, ["b"]);
    assert_eq!(table.merged(&unlabelled(&delivery), true).labels, ["a"]);
}

#[test]
fn completed_before_queued_stays_completed_and_fills_labels() {
    let store = JobStore::open_in_memory().expect("open");
    let mut completed = event("c", 7, JobState::Completed);
    completed.facts.labels.clear();
    completed.facts.started_at = None;
    store.record(&completed, at(5)).expect("record");

    let r = record(&store, "a", 7, JobState::Queued, 6);
    let Recorded::Stale { current } = r else {
        panic!("older state applied: {r:?}");
    };
    assert_eq!(current.state, JobState::Completed);
    assert_eq!(current.facts.labels, ["self-hosted", "linux"]);
    assert_eq!(current.updated_at, at(6), "the fill is a change");

    let r = record(&store, "b", 7, JobState::InProgress, 7);
    let Recorded::Stale { current } = r else {
        panic!("older state applied: {r:?}");
    };
    assert_eq!(current.state, JobState::Completed);
    assert_eq!(current.facts.started_at, Some(at(1)), "started_at filled");
    assert!(store.queued().expect("queued").is_empty());
}

#[test]
fn duplicate_delivery_is_ignored() {
    let store = JobStore::open_in_memory().expect("open");
    assert!(!store.seen_delivery("a").expect("seen"));
    record(&store, "a", 1, JobState::Queued, 0);
    assert!(store.seen_delivery("a").expect("seen"));

    // The same GUID again, even claiming a later state, changes nothing.
    let r = record(&store, "a", 1, JobState::Completed, 1);
    assert_eq!(r, Recorded::Duplicate);
    let job = store.get(1).expect("get").expect("job");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.updated_at, at(0));

    // Without a GUID, nothing is deduplicated.
    let mut no_guid = event("", 2, JobState::Queued);
    no_guid.delivery = None;
    assert!(matches!(
        store.record(&no_guid, at(0)).expect("record"),
        Recorded::Applied { previous: None, .. }
    ));
    assert!(matches!(
        store.record(&no_guid, at(1)).expect("record"),
        Recorded::Stale { .. }
    ));
}

#[test]
fn redelivery_of_older_state_is_stale() {
    let store = JobStore::open_in_memory().expect("open");
    record(&store, "a", 1, JobState::Queued, 0);
    record(&store, "b", 1, JobState::InProgress, 1);
    let before = store.get(1).expect("get").expect("job");

    // A redelivery carries a new GUID. An equal state is stale too, and with nothing to fill,
    // changes nothing.
    for (guid, state, minute) in [("a2", JobState::Queued, 2), ("b2", JobState::InProgress, 3)] {
        let current = before.clone();
        assert_eq!(
            record(&store, guid, 1, state, minute),
            Recorded::Stale { current }
        );
    }
    assert_eq!(store.get(1).expect("get"), Some(before));
    // The GUID is kept, so the redelivery is not processed a second time.
    assert!(store.seen_delivery("a2").expect("seen"));
    assert_eq!(
        record(&store, "a2", 1, JobState::Queued, 4),
        Recorded::Duplicate
    );
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state").join(JOB_DB_FILE);
    {
        let store = JobStore::open(&path).expect("open creates the directory");
        record(&store, "a", 1, JobState::Queued, 0);
        record(&store, "b", 2, JobState::InProgress, 0);
    }
    let store = JobStore::open(&path).expect("reopen");
    let queued = store.queued().expect("queued");
    assert_eq!(
        queued,
        [QueuedJob {
            id: 1,
            labels: vec!["self-hosted".to_owned(), "linux".to_owned()],
            created_at: T0,
        }]
    );
    assert_eq!(state_of(&store, 2), Some(JobState::InProgress));
    assert!(store.seen_delivery("b").expect("seen"));
    assert_eq!(
        record(&store, "a", 1, JobState::Queued, 1),
        Recorded::Duplicate
    );
}

#[test]
fn queued_oldest_first_then_by_id() {
    let store = JobStore::open_in_memory().expect("open");
    for (id, created) in [(5, 3), (3, 1), (4, 1), (1, 2), (2, 0)] {
        let mut e = event(&format!("q{id}"), id, JobState::Queued);
        e.facts.created_at = at(created);
        store.record(&e, at(10)).expect("record");
    }
    record(&store, "s", 1, JobState::InProgress, 11);
    let ids: Vec<u64> = store
        .queued()
        .expect("queued")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, [2, 3, 4, 5]);
}

#[test]
fn job_on_runner_is_the_latest_started() {
    let store = JobStore::open_in_memory().expect("open");
    for (id, started) in [(1, 1), (3, 2), (2, 9)] {
        let mut e = event(&format!("s{id}"), id, JobState::InProgress);
        e.facts.started_at = Some(at(started));
        store.record(&e, at(10)).expect("record");
    }
    let job = store.job_on_runner("runner-1").expect("on runner");
    assert_eq!(job.map(|j| j.id), Some(2));
}

#[test]
fn expire_and_prune() {
    let store = JobStore::open_in_memory().expect("open");
    let mut old = event("old", 1, JobState::Queued);
    old.facts.created_at = at(-25 * 60);
    store.record(&old, at(-25 * 60)).expect("record");
    record(&store, "new", 2, JobState::Queued, 0);
    record(&store, "run", 3, JobState::InProgress, 0);

    let expired = store.expire_queued(at(-24 * 60), at(1)).expect("expire");
    assert_eq!(expired, 1);
    let job = store.get(1).expect("get").expect("job");
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.facts.completed_at, Some(at(1)));
    assert_eq!(job.updated_at, at(1));
    assert_eq!(store.counts().expect("counts"), (1, 1, 1));
    assert_eq!(store.expire_queued(at(-24 * 60), at(2)).expect("expire"), 0);

    // A late queued delivery does not bring an expired job back.
    let r = record(&store, "old2", 1, JobState::Queued, 2);
    assert!(matches!(r, Recorded::Stale { .. }));

    // Job 1 was last changed at at(1) (the stale delivery had nothing to fill).
    assert_eq!(store.prune(at(0)).expect("prune"), 1, "only `old`'s GUID");
    assert_eq!(state_of(&store, 1), Some(JobState::Completed));
    assert!(store.seen_delivery("new").expect("seen"));
    assert_eq!(store.prune(at(3)).expect("prune"), 4, "job 1 and 3 GUIDs");
    assert_eq!(state_of(&store, 1), None);
    assert_eq!(store.counts().expect("counts"), (1, 1, 0));
    assert!(!store.seen_delivery("new").expect("seen"));
}

#[test]
fn newer_schema_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOB_DB_FILE);
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA user_version = 2")
            .expect("version");
    }
    let err = JobStore::open(&path).expect_err("newer schema");
    assert!(
        matches!(
            &err,
            JobStoreError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("delete it"), "{message}");
}

#[test]
fn not_a_database_is_an_open_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOB_DB_FILE);
    std::fs::write(
        &path,
        b"this is not a database, it is long enough to have a header",
    )
    .expect("write");
    let err = JobStore::open(&path).expect_err("garbage");
    assert!(matches!(&err, JobStoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn unparsable_rows_are_corrupt() {
    let store = JobStore::open_in_memory().expect("open");
    record(&store, "a", 1, JobState::Queued, 0);
    record(&store, "b", 2, JobState::Queued, 0);
    {
        let conn = store.conn.lock();
        conn.execute("UPDATE jobs SET labels = 'nope' WHERE id = 1", [])
            .expect("update");
        conn.execute("UPDATE jobs SET state = 'waiting' WHERE id = 2", [])
            .expect("update");
    }
    let err = store.get(1).expect_err("bad labels");
    assert!(
        matches!(err, JobStoreError::Corrupt { id: 1, .. }),
        "{err:?}"
    );
    let err = store.queued().expect_err("bad labels");
    assert!(
        matches!(err, JobStoreError::Corrupt { id: 1, .. }),
        "{err:?}"
    );
    let err = store.get(2).expect_err("bad state");
    assert!(
        matches!(err, JobStoreError::Corrupt { id: 2, .. }),
        "{err:?}"
    );
    let err = store.counts().expect_err("bad state");
    assert!(
        matches!(err, JobStoreError::Corrupt { id: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(JOB_DB_FILE));
}

#[test]
fn writer_and_reader_on_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOB_DB_FILE);
    let writer = JobStore::open(&path).expect("open writer");
    let reader = JobStore::open(&path).expect("open reader");
    const JOBS: u64 = 200;
    std::thread::scope(|s| {
        s.spawn(|| {
            for id in 1..=JOBS {
                writer
                    .record(&event(&format!("q{id}"), id, JobState::Queued), at(0))
                    .expect("record queued");
                if id % 2 == 0 {
                    writer
                        .record(&event(&format!("c{id}"), id, JobState::Completed), at(1))
                        .expect("record completed");
                }
            }
        });
        s.spawn(|| {
            let mut last = 0;
            loop {
                let (queued, _, completed) = reader.counts().expect("counts");
                let total = queued + completed;
                assert!(total >= last, "the reader never sees the table shrink");
                last = total;
                reader.queued().expect("queued");
                if total == JOBS as usize {
                    break;
                }
                std::thread::yield_now();
            }
        });
    });
    assert_eq!(
        reader.counts().expect("counts"),
        (JOBS as usize / 2, 0, JOBS as usize / 2)
    );
}

fn any_state() -> impl Strategy<Value = JobState> {
    prop_oneof![
        Just(JobState::Queued),
        Just(JobState::InProgress),
        Just(JobState::Completed),
    ]
}

proptest! {
    #[test]
    fn state_is_the_max_and_never_moves_back(
        deliveries in proptest::collection::vec((any_state(), any::<bool>()), 1..10),
    ) {
        let store = JobStore::open_in_memory().expect("open");
        let mut known: Option<JobState> = None;
        for (i, (state, with_guid)) in deliveries.iter().enumerate() {
            let mut e = event(&format!("g{i}"), 1, *state);
            if !with_guid {
                e.delivery = None;
            }
            let r = store.record(&e, at(i as i64)).expect("record");
            let now = state_of(&store, 1).expect("job exists");
            match r {
                Recorded::Applied { previous, job } => {
                    prop_assert_eq!(previous, known);
                    prop_assert!(Some(job.state) > previous);
                    prop_assert_eq!(job.state, *state);
                }
                Recorded::Stale { current } => {
                    prop_assert!(current.state >= *state);
                    prop_assert_eq!(Some(current.state), known);
                }
                Recorded::Duplicate => prop_assert!(false, "every GUID is new"),
            }
            prop_assert!(Some(now) >= known, "moved back from {:?} to {:?}", known, now);
            known = Some(now);
        }
        let max = deliveries.iter().map(|(s, _)| *s).max();
        prop_assert_eq!(known, max);
    }
}
