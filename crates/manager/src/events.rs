//! Typed telemetry: each event's `emit` writes the log line, updates the Prometheus metrics and,
//! when `issue_metrics` is on, appends the JSON line to the events log, so the three never drift.
//!
//! The events log keeps the original schema: `{"timestamp": <int seconds>, "event": ..., "flavor":
//! <app_name>, ...}`. A write failure is logged and counted, never propagated.

mod metrics;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use crate::lease::events::{HaMetrics, LeaseAction, LeaseRoleChanged};
pub(crate) use metrics::labels;
pub use metrics::{Labels, Metrics};

/// Where events go.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    flavor: String,
    events_log: Option<PathBuf>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("flavor", &self.flavor)
            .field("events_log", &self.events_log)
            .finish()
    }
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Telemetry {
    /// `events_log` is `Some` when `issue_metrics` is on.
    pub fn new(metrics: Arc<Metrics>, flavor: &str, events_log: Option<PathBuf>) -> Self {
        Self {
            metrics,
            flavor: flavor.to_owned(),
            events_log,
            clock: Arc::new(unix_now),
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    pub(crate) fn issue<T: Serialize>(&self, event: &'static str, timestamp: i64, fields: &T) {
        let Some(path) = &self.events_log else {
            return;
        };
        #[derive(Serialize)]
        struct Line<'a, T: Serialize> {
            timestamp: i64,
            event: &'static str,
            flavor: &'a str,
            #[serde(flatten)]
            fields: &'a T,
        }
        let line = Line {
            timestamp,
            event,
            flavor: &self.flavor,
            fields,
        };
        let result = serde_json::to_string(&line)
            .map_err(std::io::Error::other)
            .and_then(|mut json| {
                json.push('\n');
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                // One write per line: appends of a single short line are not interleaved.
                file.write_all(json.as_bytes())
            });
        match result {
            Ok(()) => {
                self.metrics
                    .events_written_total
                    .get_or_create(&labels(&[("event", event)]))
                    .inc();
            }
            Err(error) => {
                self.metrics.error("events_log");
                tracing::warn!(message = "Writing a metrics event failed.", event, path = %path.display(), %error);
            }
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// A runner was created, installed and started.
#[derive(Debug, Clone)]
pub struct RunnerInstalled {
    pub name: String,
    pub duration: Duration,
}

impl RunnerInstalled {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner installed.", runner = %self.name, duration_seconds = self.duration.as_secs_f64());
        t.metrics.runners_created_total.inc();
        t.metrics
            .runner_install_duration_seconds
            .observe(self.duration.as_secs_f64());
        #[derive(Serialize)]
        struct F {
            duration: u64,
        }
        t.issue(
            "runner_installed",
            t.now(),
            &F {
                duration: secs(self.duration),
            },
        );
    }
}

/// The job a runner took, as its pre-job hook recorded it (missing fields are empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JobContext {
    pub workflow: String,
    pub repo: String,
    pub github_event: String,
}

/// A job started on a runner (collected from the pre-job hook's record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerStart {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub timestamp: i64,
    #[serde(flatten)]
    pub job: JobContext,
    /// Seconds the runner waited for the job.
    pub idle: u64,
    /// Seconds the job waited for a runner (GitHub's queued → started), when the job table
    /// knows the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_duration: Option<u64>,
}

impl RunnerStart {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner started a job.", runner = %self.name, workflow = %self.job.workflow, repo = %self.job.repo, idle_seconds = self.idle);
        t.issue("runner_start", self.timestamp, self);
    }
}

/// A job ended on a runner, normally or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerStop {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub timestamp: i64,
    #[serde(flatten)]
    pub job: JobContext,
    /// `normal`, `abnormal` or `repo-policy-check-failure`.
    pub status: String,
    pub job_duration: u64,
}

impl RunnerStop {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner finished a job.", runner = %self.name, status = %self.status, job_duration_seconds = self.job_duration);
        t.issue("runner_stop", self.timestamp, self);
    }
}

/// A runner was removed.
#[derive(Debug, Clone)]
pub struct RunnerRemoved {
    pub name: String,
    pub reason: crate::plan::RemovalReason,
}

impl RunnerRemoved {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner removed.", runner = %self.name, reason = %self.reason);
        t.metrics
            .runners_removed_total
            .get_or_create(&labels(&[("reason", self.reason.as_str())]))
            .inc();
    }
}

/// Owned runners by state after an observation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerCounts {
    pub busy: usize,
    pub idle: usize,
    pub booting: usize,
    pub unhealthy: usize,
    /// On an offline cluster member (busy or not): not counted as healthy.
    pub lost: usize,
}

/// How a reconcile pass ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// Every step succeeded.
    Ok,
    /// The pass ran, but a step (a creation, a removal, the creations' preflight) failed.
    Partial,
    /// The pass did nothing: observing failed, the binary is missing, the lock was refused...
    Error,
}

impl ReconcileResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for ReconcileResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reconcile pass finished, whatever its result. An [`ReconcileResult::Error`] pass observed
/// nothing: it counts in `reconciles_total` and the duration histogram, but leaves the runner
/// gauges as they were and writes no events-log line (whose counts would be made up).
#[derive(Debug, Clone)]
pub struct Reconciliation {
    pub crashed_runners: usize,
    pub idle_runners: usize,
    pub counts: RunnerCounts,
    pub duration: Duration,
    pub result: ReconcileResult,
}

impl Reconciliation {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(
            message = "Reconciliation finished.",
            result = self.result.as_str(),
            crashed_runners = self.crashed_runners,
            idle_runners = self.idle_runners,
            duration_seconds = self.duration.as_secs_f64()
        );
        let result = labels(&[("result", self.result.as_str())]);
        t.metrics.reconciles_total.get_or_create(&result).inc();
        t.metrics
            .reconcile_duration_seconds
            .get_or_create(&result)
            .observe(self.duration.as_secs_f64());
        if self.result == ReconcileResult::Error {
            return;
        }
        for (state, n) in [
            ("busy", self.counts.busy),
            ("idle", self.counts.idle),
            ("booting", self.counts.booting),
            ("unhealthy", self.counts.unhealthy),
            ("lost", self.counts.lost),
        ] {
            t.metrics
                .runners
                .get_or_create(&labels(&[("state", state)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        #[derive(Serialize)]
        struct F {
            crashed_runners: usize,
            idle_runners: usize,
            duration: u64,
        }
        t.issue(
            "reconciliation",
            t.now(),
            &F {
                crashed_runners: self.crashed_runners,
                idle_runners: self.idle_runners,
                duration: secs(self.duration),
            },
        );
    }
}

/// A demand pass sized a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSized {
    pub pool: String,
    pub desired: usize,
    pub counts: RunnerCounts,
    pub queued: usize,
    pub draining: bool,
}

impl PoolSized {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Pool sized.", pool = %self.pool, desired = self.desired,
            idle = self.counts.idle, busy = self.counts.busy, booting = self.counts.booting,
            queued = self.queued, draining = self.draining);
        for (state, value) in [
            ("desired", self.desired),
            ("idle", self.counts.idle),
            ("busy", self.counts.busy),
            ("booting", self.counts.booting),
        ] {
            t.metrics
                .pool_runners
                .get_or_create(&labels(&[("pool", &self.pool), ("state", state)]))
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        t.metrics
            .pool_jobs_queued
            .get_or_create(&labels(&[("pool", &self.pool)]))
            .set(i64::try_from(self.queued).unwrap_or(i64::MAX));
    }
}

/// A job of the job table changed state (a webhook delivery, or one recovered from GitHub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChanged {
    pub job_id: u64,
    /// `queued`, `in_progress` or `completed`.
    pub state: &'static str,
    /// The pool its labels route to; `None`: no pool matches.
    pub pool: Option<String>,
    /// Set when the job started: GitHub's queued → started.
    pub queue_time: Option<Duration>,
    pub runner: Option<String>,
}

impl JobChanged {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(
            message = "Job changed.",
            job_id = self.job_id,
            state = self.state,
            pool = self.pool.as_deref().unwrap_or("-"),
            runner = self.runner.as_deref().unwrap_or("-"),
            queue_seconds = self.queue_time.map(|d| d.as_secs_f64())
        );
        match (&self.pool, self.queue_time) {
            (Some(pool), Some(queue_time)) => {
                t.metrics
                    .job_queue_seconds
                    .get_or_create(&labels(&[("pool", pool)]))
                    .observe(queue_time.as_secs_f64());
            }
            (None, _) if self.state == "queued" => {
                t.metrics.jobs_unmatched_total.inc();
            }
            _ => {}
        }
    }
}

/// A new runner was seen online on GitHub for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOnline {
    pub name: String,
    pub pool: String,
    /// Since its instance was created.
    pub boot_time: Duration,
}

impl RunnerOnline {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner online.", runner = %self.name, pool = %self.pool,
            boot_seconds = self.boot_time.as_secs_f64());
        t.metrics
            .runner_boot_seconds
            .get_or_create(&labels(&[("pool", &self.pool)]))
            .observe(self.boot_time.as_secs_f64());
    }
}

/// A baked image was built and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuilt {
    pub pool: String,
    pub alias: String,
    pub runner_version: String,
    pub duration: Duration,
}

impl ImageBuilt {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Image built.", pool = %self.pool, alias = %self.alias,
            runner_version = %self.runner_version, duration_seconds = self.duration.as_secs_f64());
        image_event(t, &self.pool, "built");
    }
}

/// Counts one of a pool's image events (`built`, `promoted`, `rolled_back`, `deleted`).
pub fn image_event(t: &Telemetry, pool: &str, event: &str) {
    t.metrics
        .image_events_total
        .get_or_create(&labels(&[("pool", pool), ("event", event)]))
        .inc();
}

/// A pool's canary image was judged: promoted to good, or rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageJudged {
    pub pool: String,
    pub alias: String,
    /// `promoted` or `rolled_back`.
    pub verdict: &'static str,
}

impl ImageJudged {
    pub fn emit(&self, t: &Telemetry) {
        if self.verdict == "rolled_back" {
            tracing::warn!(message = "Canary image rolled back: its runners did not start; the pool stays on its last good image.",
                pool = %self.pool, alias = %self.alias);
        } else {
            tracing::info!(message = "Canary image promoted.", pool = %self.pool, alias = %self.alias);
        }
        image_event(t, &self.pool, self.verdict);
    }
}

/// Where a pass placed a pool's new runners on a cluster, what found no room, and the pool's
/// runners on offline members. Emitted for every pool of every pass on a cluster, so the
/// gauges return to 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlaced {
    pub pool: String,
    /// Runners placed per member.
    pub placed: Vec<(String, usize)>,
    /// Wanted but not placed: retried by a later pass.
    pub shortfall: usize,
    /// Why (`no_member`, `offline`, `full`), when `shortfall > 0`.
    pub reason: Option<&'static str>,
    /// Idle runners on an offline member (their registration is deleted).
    pub lost_idle: Vec<String>,
    /// Busy runners on an offline member: jobs running on a lost member.
    pub lost_busy: Vec<String>,
}

impl PoolPlaced {
    pub fn emit(&self, t: &Telemetry) {
        if self.shortfall > 0 {
            tracing::warn!(message = "No cluster member has room for some runners: retried later.",
                pool = %self.pool, shortfall = self.shortfall, reason = self.reason.unwrap_or("-"));
        }
        if !self.placed.is_empty() {
            tracing::info!(message = "Runners placed.", pool = %self.pool, placed = ?self.placed);
        }
        if !self.lost_idle.is_empty() || !self.lost_busy.is_empty() {
            tracing::warn!(message = "Runners lost on an offline cluster member.", pool = %self.pool,
                idle = ?self.lost_idle, busy = ?self.lost_busy);
        }
        if !self.lost_busy.is_empty() {
            tracing::warn!(message = "Jobs running on a lost cluster member.", pool = %self.pool,
                runners = ?self.lost_busy);
        }
        let pool = labels(&[("pool", &self.pool)]);
        t.metrics
            .placement_shortfall
            .get_or_create(&pool)
            .set(i64::try_from(self.shortfall).unwrap_or(i64::MAX));
        t.metrics
            .lost_busy_runners
            .get_or_create(&pool)
            .set(i64::try_from(self.lost_busy.len()).unwrap_or(i64::MAX));
        #[derive(Serialize)]
        struct F<'a> {
            pool: &'a str,
            shortfall: usize,
            lost_busy: &'a [String],
        }
        if self.shortfall > 0 || !self.lost_busy.is_empty() {
            t.issue(
                "placement",
                t.now(),
                &F {
                    pool: &self.pool,
                    shortfall: self.shortfall,
                    lost_busy: &self.lost_busy,
                },
            );
        }
    }
}

/// Unix time in milliseconds (action lines: their order across managers on one host).
pub fn unix_now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}
