//! Typed telemetry of scale-set mode: each `emit` writes the log line, the Prometheus metrics
//! and (with `issue_metrics`) the events-log line together, as [`crate::events`] does.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::{SessionState, Statistics};
use crate::events::{Labels, Telemetry};

/// The `runner_manager_scaleset_*` metrics.
#[derive(Debug)]
pub struct ScaleSetMetrics {
    /// Per pool and `stat`: the last statistics (assigned_jobs, running_jobs,
    /// registered_runners, busy_runners, idle_runners, available_jobs, acquired_jobs).
    pub statistics: Family<Labels, Gauge>,
    /// Per pool: the listener's desired runner count.
    pub desired_runners: Family<Labels, Gauge>,
    /// Per pool and `state`: 1 for the session's current state, 0 for the others.
    pub session: Family<Labels, Gauge>,
    /// Per pool: 409 answers (another session holds the set).
    pub session_conflicts_total: Family<Labels, Counter>,
    /// Per pool: queued → runner assigned (`queueTime` → `runnerAssignTime`).
    pub job_queue_seconds: Family<Labels, Histogram>,
    /// Per pool: assigned to the set → runner assigned (`scaleSetAssignTime` →
    /// `runnerAssignTime`): how long the job waited for a runner of ours.
    pub job_startup_seconds: Family<Labels, Histogram>,
    /// Per pool and `result`.
    pub jobs_completed_total: Family<Labels, Counter>,
    /// Per pool: messages handled.
    pub messages_total: Family<Labels, Counter>,
}

impl Default for ScaleSetMetrics {
    fn default() -> Self {
        Self {
            statistics: Family::default(),
            desired_runners: Family::default(),
            session: Family::default(),
            session_conflicts_total: Family::default(),
            job_queue_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 14))
            }),
            job_startup_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 14))
            }),
            jobs_completed_total: Family::default(),
            messages_total: Family::default(),
        }
    }
}

impl ScaleSetMetrics {
    /// Registers under `scaleset_` in `registry` (already prefixed `runner_manager`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("scaleset");
        r.register(
            "statistics",
            "The scale set's last statistics by pool and stat",
            self.statistics.clone(),
        );
        r.register(
            "desired_runners",
            "The listener's desired runner count by pool",
            self.desired_runners.clone(),
        );
        r.register(
            "session",
            "1 for the message session's current state (connecting, active, standby, failing, stopped)",
            self.session.clone(),
        );
        r.register(
            "session_conflicts",
            "Session creations refused because another session holds the set",
            self.session_conflicts_total.clone(),
        );
        r.register(
            "job_queue_seconds",
            "Job queued to runner assigned, by pool",
            self.job_queue_seconds.clone(),
        );
        r.register(
            "job_startup_seconds",
            "Job assigned to the set to runner assigned, by pool",
            self.job_startup_seconds.clone(),
        );
        r.register(
            "jobs_completed",
            "Jobs completed by pool and result",
            self.jobs_completed_total.clone(),
        );
        r.register(
            "messages",
            "Queue messages handled by pool",
            self.messages_total.clone(),
        );
    }
}

fn pool_labels(pool: &str) -> Labels {
    vec![("pool", pool.to_owned())]
}

fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Milliseconds since the epoch (the events log's `timestamp` is in seconds; ordering sessions
/// of two managers needs more).
fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    gauge(now.unix_timestamp_nanos() / 1_000_000)
}

/// The session of a pool's listener changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChanged {
    pub pool: String,
    pub state: SessionState,
    pub scale_set_id: Option<u64>,
    pub owner: String,
}

impl SessionChanged {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Scale-set session.", pool = %self.pool, state = self.state.as_str(),
            scale_set_id = self.scale_set_id, owner = %self.owner);
        for state in SessionState::ALL {
            t.metrics
                .scale_set
                .session
                .get_or_create(&vec![
                    ("pool", self.pool.clone()),
                    ("state", state.as_str().to_owned()),
                ])
                .set(i64::from(state == self.state));
        }
        if self.state == SessionState::Standby {
            t.metrics
                .scale_set
                .session_conflicts_total
                .get_or_create(&pool_labels(&self.pool))
                .inc();
        }
        #[derive(Serialize)]
        struct F<'a> {
            pool: &'a str,
            state: &'static str,
            scale_set_id: Option<u64>,
            owner: &'a str,
            at_ms: i64,
        }
        t.issue(
            "scaleset_session",
            t.now(),
            &F {
                pool: &self.pool,
                state: self.state.as_str(),
                scale_set_id: self.scale_set_id,
                owner: &self.owner,
                at_ms: now_ms(),
            },
        );
    }
}

/// A message was handled (or a poll came back empty): the statistics and the desired count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetScaled {
    pub pool: String,
    pub statistics: Statistics,
    pub desired: usize,
    /// Whether the desired count changed (only then is it logged and written).
    pub changed: bool,
}

impl ScaleSetScaled {
    pub fn emit(&self, t: &Telemetry) {
        let s = self.statistics;
        let m = &t.metrics.scale_set;
        for (stat, value) in [
            ("assigned_jobs", s.assigned_jobs),
            ("running_jobs", s.running_jobs),
            ("registered_runners", s.registered_runners),
            ("busy_runners", s.busy_runners),
            ("idle_runners", s.idle_runners),
            ("available_jobs", s.available_jobs),
            ("acquired_jobs", s.acquired_jobs),
        ] {
            m.statistics
                .get_or_create(&vec![
                    ("pool", self.pool.clone()),
                    ("stat", stat.to_owned()),
                ])
                .set(i64::from(value));
        }
        m.desired_runners
            .get_or_create(&pool_labels(&self.pool))
            .set(gauge(self.desired));
        if !self.changed {
            return;
        }
        tracing::info!(message = "Scale set sized.", pool = %self.pool, desired = self.desired,
            assigned = s.assigned_jobs, running = s.running_jobs, registered = s.registered_runners,
            busy = s.busy_runners, idle = s.idle_runners);
        #[derive(Serialize)]
        struct F<'a> {
            pool: &'a str,
            desired: usize,
            assigned_jobs: u32,
            running_jobs: u32,
            at_ms: i64,
        }
        t.issue(
            "scaleset_desired",
            t.now(),
            &F {
                pool: &self.pool,
                desired: self.desired,
                assigned_jobs: s.assigned_jobs,
                running_jobs: s.running_jobs,
                at_ms: now_ms(),
            },
        );
    }
}

/// A job started on one of the set's runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetJobStarted {
    pub pool: String,
    pub job_id: String,
    pub runner: String,
    pub queue_time: Option<Duration>,
    pub startup_time: Option<Duration>,
}

impl ScaleSetJobStarted {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Scale-set job started.", pool = %self.pool, job_id = %self.job_id,
            runner = %self.runner, queue_seconds = self.queue_time.map(|d| d.as_secs_f64()),
            startup_seconds = self.startup_time.map(|d| d.as_secs_f64()));
        let m = &t.metrics.scale_set;
        if let Some(d) = self.queue_time {
            m.job_queue_seconds
                .get_or_create(&pool_labels(&self.pool))
                .observe(d.as_secs_f64());
        }
        if let Some(d) = self.startup_time {
            m.job_startup_seconds
                .get_or_create(&pool_labels(&self.pool))
                .observe(d.as_secs_f64());
        }
        #[derive(Serialize)]
        struct F<'a> {
            pool: &'a str,
            job_id: &'a str,
            runner: &'a str,
            queue_seconds: Option<f64>,
            at_ms: i64,
        }
        t.issue(
            "scaleset_job_started",
            t.now(),
            &F {
                pool: &self.pool,
                job_id: &self.job_id,
                runner: &self.runner,
                queue_seconds: self.queue_time.map(|d| d.as_secs_f64()),
                at_ms: now_ms(),
            },
        );
    }
}

/// A job of the set completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetJobCompleted {
    pub pool: String,
    pub job_id: String,
    pub runner: Option<String>,
    pub result: String,
}

impl ScaleSetJobCompleted {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Scale-set job completed.", pool = %self.pool, job_id = %self.job_id,
            runner = self.runner.as_deref().unwrap_or("-"), result = %self.result);
        // A bounded label: the known results, else "other".
        let result = match self.result.as_str() {
            r @ ("succeeded" | "failed" | "canceled" | "cancelled" | "skipped") => r,
            _ => "other",
        };
        t.metrics
            .scale_set
            .jobs_completed_total
            .get_or_create(&vec![
                ("pool", self.pool.clone()),
                ("result", result.to_owned()),
            ])
            .inc();
        #[derive(Serialize)]
        struct F<'a> {
            pool: &'a str,
            job_id: &'a str,
            runner: Option<&'a str>,
            result: &'a str,
            at_ms: i64,
        }
        t.issue(
            "scaleset_job_completed",
            t.now(),
            &F {
                pool: &self.pool,
                job_id: &self.job_id,
                runner: self.runner.as_deref(),
                result,
                at_ms: now_ms(),
            },
        );
    }
}
