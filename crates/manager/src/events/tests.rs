//! The events log's schema and its failures.

use super::*;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

fn telemetry(log: Option<PathBuf>) -> (Telemetry, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    (
        Telemetry::new(metrics, "small", log).with_clock(|| 123),
        registry,
    )
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn job_context() -> JobContext {
    JobContext {
        workflow: "ci".into(),
        repo: "o/r".into(),
        github_event: "push".into(),
    }
}

#[test]
fn events_log_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.log");
    let (t, registry) = telemetry(Some(log.clone()));
    RunnerInstalled {
        name: "small-0-abcdefgh".into(),
        duration: Duration::from_millis(456_900),
    }
    .emit(&t);
    RunnerStart {
        name: "n".into(),
        timestamp: 100,
        job: job_context(),
        idle: 7,
        queue_duration: None,
    }
    .emit(&t);
    RunnerStop {
        name: "n".into(),
        timestamp: 160,
        job: job_context(),
        status: "normal".into(),
        job_duration: 60,
    }
    .emit(&t);
    Reconciliation {
        crashed_runners: 1,
        idle_runners: 2,
        counts: RunnerCounts::default(),
        duration: Duration::from_secs(3),
        result: ReconcileResult::Ok,
    }
    .emit(&t);
    // A failed pass is counted, but writes no line and leaves the runner gauges alone.
    Reconciliation {
        crashed_runners: 0,
        idle_runners: 0,
        counts: RunnerCounts::default(),
        duration: Duration::from_secs(1),
        result: ReconcileResult::Error,
    }
    .emit(&t);
    assert_eq!(
        lines(&log),
        vec![
            json!({"event":"runner_installed","timestamp":123,"flavor":"small","duration":456}),
            json!({"event":"runner_start","timestamp":100,"flavor":"small","workflow":"ci","repo":"o/r","github_event":"push","idle":7}),
            json!({"event":"runner_stop","timestamp":160,"flavor":"small","workflow":"ci","repo":"o/r","github_event":"push","status":"normal","job_duration":60}),
            json!({"event":"reconciliation","timestamp":123,"flavor":"small","crashed_runners":1,"idle_runners":2,"duration":3}),
        ]
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("runner_manager_runners_created_total 1"),
        "{text}"
    );
    assert!(
        text.contains("runner_manager_reconciles_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("runner_manager_reconciles_total{result=\"error\"} 1"),
        "{text}"
    );
    assert!(text.contains("runner_manager_events_written_total{event=\"runner_stop\"} 1"));
    assert!(text.contains("runner_manager_events_written_total{event=\"reconciliation\"} 1"));
}

#[test]
fn metrics_off_writes_nothing_and_failures_are_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (off, _) = telemetry(None);
    RunnerInstalled {
        name: "n".into(),
        duration: Duration::ZERO,
    }
    .emit(&off);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    // A directory where the log file should be: the write fails, the emit does not.
    let (broken, registry) = telemetry(Some(dir.path().to_owned()));
    RunnerInstalled {
        name: "n".into(),
        duration: Duration::ZERO,
    }
    .emit(&broken);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("runner_manager_errors_total{kind=\"events_log\"} 1"),
        "{text}"
    );
}
