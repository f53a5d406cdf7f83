//! Typed telemetry: each event's `emit` writes the log line, updates the Prometheus metrics and,
//! when `issue_metrics` is on, appends the JSON line to the events log, so the three never drift.
//!
//! The events log keeps the original schema: `{"timestamp": <int seconds>, "event": ..., "flavor":
//! <app_name>, ...}`. A write failure is logged and counted, never propagated.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Bounded label sets: keys are static, values come from closed sets (never error text or names).
pub type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The `runner_manager_*` metrics.
#[derive(Debug)]
pub struct Metrics {
    pub reconcile_duration_seconds: Family<Labels, Histogram>,
    pub reconciles_total: Family<Labels, Counter>,
    pub runners: Family<Labels, Gauge>,
    pub runners_created_total: Counter,
    pub runners_removed_total: Family<Labels, Counter>,
    pub runner_install_duration_seconds: Histogram,
    pub errors_total: Family<Labels, Counter>,
    pub github_api_calls_total: Family<Labels, Counter>,
    pub github_rate_limit_remaining: Gauge,
    pub github_rate_limit_reset_timestamp_seconds: Gauge,
    pub runner_binary_info: Family<Labels, Gauge>,
    pub events_written_total: Family<Labels, Counter>,
    /// Per pool: `desired`, `idle`, `busy`, `booting` runners after the last demand pass.
    pub pool_runners: Family<Labels, Gauge>,
    /// Per pool: queued jobs routed to it.
    pub pool_jobs_queued: Family<Labels, Gauge>,
    /// Per pool: queued → started, from GitHub's timestamps.
    pub job_queue_seconds: Family<Labels, Histogram>,
    /// Per pool: instance created → runner online on GitHub.
    pub runner_boot_seconds: Family<Labels, Histogram>,
    /// Queued jobs that no pool matches.
    pub jobs_unmatched_total: Counter,
    /// Baked images built, promoted, rolled back and deleted, per pool.
    pub image_events_total: Family<Labels, Counter>,
    /// Per pool: runners wanted that no cluster member had room for in the last pass.
    pub placement_shortfall: Family<Labels, Gauge>,
    /// Per pool: runners GitHub says busy whose cluster member is offline (their jobs may be
    /// lost), after the last pass.
    pub lost_busy_runners: Family<Labels, Gauge>,
    /// Scale-set mode's metrics (`runner_manager_scaleset_*`).
    pub scale_set: crate::scaleset::ScaleSetMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them under `runner_manager_`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconcile_duration_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 14))
            }),
            reconciles_total: Family::default(),
            runners: Family::default(),
            runners_created_total: Counter::default(),
            runners_removed_total: Family::default(),
            runner_install_duration_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            errors_total: Family::default(),
            github_api_calls_total: Family::default(),
            github_rate_limit_remaining: Gauge::default(),
            github_rate_limit_reset_timestamp_seconds: Gauge::default(),
            runner_binary_info: Family::default(),
            events_written_total: Family::default(),
            pool_runners: Family::default(),
            pool_jobs_queued: Family::default(),
            job_queue_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 14))
            }),
            runner_boot_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 12))
            }),
            jobs_unmatched_total: Counter::default(),
            image_events_total: Family::default(),
            placement_shortfall: Family::default(),
            lost_busy_runners: Family::default(),
            scale_set: crate::scaleset::ScaleSetMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("runner_manager");
        metrics.scale_set.register(r);
        r.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes by result",
            metrics.reconcile_duration_seconds.clone(),
        );
        r.register(
            "reconciles",
            "Reconcile passes by result (ok, partial, error)",
            metrics.reconciles_total.clone(),
        );
        r.register(
            "runners",
            "Owned runners by state after the last observation",
            metrics.runners.clone(),
        );
        r.register(
            "runners_created",
            "Runners created and started",
            metrics.runners_created_total.clone(),
        );
        r.register(
            "runners_removed",
            "Runners removed by reason",
            metrics.runners_removed_total.clone(),
        );
        r.register(
            "runner_install_duration_seconds",
            "Time from create request to a started runner",
            metrics.runner_install_duration_seconds.clone(),
        );
        r.register("errors", "Errors by kind", metrics.errors_total.clone());
        r.register(
            "github_api_calls",
            "GitHub API calls by call and status class",
            metrics.github_api_calls_total.clone(),
        );
        r.register(
            "github_rate_limit_remaining",
            "GitHub rate limit remaining in the current window",
            metrics.github_rate_limit_remaining.clone(),
        );
        r.register(
            "github_rate_limit_reset_timestamp_seconds",
            "When the GitHub rate limit window resets (unix seconds)",
            metrics.github_rate_limit_reset_timestamp_seconds.clone(),
        );
        r.register(
            "runner_binary_info",
            "The cached runner binary (1 for the file in use)",
            metrics.runner_binary_info.clone(),
        );
        r.register(
            "events_written",
            "Metrics events appended to the events log, by event",
            metrics.events_written_total.clone(),
        );
        r.register(
            "pool_runners",
            "Runners per pool by state (desired, idle, busy, booting) after the last pass",
            metrics.pool_runners.clone(),
        );
        r.register(
            "pool_jobs_queued",
            "Queued jobs routed to each pool",
            metrics.pool_jobs_queued.clone(),
        );
        r.register(
            "job_queue_seconds",
            "Time from a job queued to a runner picking it up, per pool",
            metrics.job_queue_seconds.clone(),
        );
        r.register(
            "runner_boot_seconds",
            "Time from instance creation to the runner online on GitHub, per pool",
            metrics.runner_boot_seconds.clone(),
        );
        r.register(
            "jobs_unmatched",
            "Queued jobs whose labels no pool has",
            metrics.jobs_unmatched_total.clone(),
        );
        r.register(
            "image_events",
            "Baked images built, promoted, rolled back and deleted, per pool",
            metrics.image_events_total.clone(),
        );
        r.register(
            "placement_shortfall",
            "Runners per pool that no cluster member had room for in the last pass",
            metrics.placement_shortfall.clone(),
        );
        r.register(
            "lost_busy_runners",
            "Busy runners per pool on an offline cluster member (jobs running on a lost member)",
            metrics.lost_busy_runners.clone(),
        );
        Arc::new(metrics)
    }

    /// Counts an error of a bounded kind.
    pub fn error(&self, kind: &'static str) {
        self.errors_total
            .get_or_create(&labels(&[("kind", kind)]))
            .inc();
    }

    /// Sets the runner-binary info metric to `filename` alone.
    pub fn set_runner_binary(&self, filename: &str) {
        self.runner_binary_info.clear();
        self.runner_binary_info
            .get_or_create(&labels(&[("filename", filename)]))
            .set(1);
    }
}

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

/// A job started on a runner (collected from the pre-job hook's record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerStart {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub timestamp: i64,
    pub workflow: String,
    pub repo: String,
    pub github_event: String,
    /// Seconds the runner waited for the job.
    pub idle: u64,
    /// Seconds the job waited for a runner (GitHub's queued → started), when the job table
    /// knows the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_duration: Option<u64>,
}

impl RunnerStart {
    pub fn emit(&self, t: &Telemetry) {
        tracing::info!(message = "Runner started a job.", runner = %self.name, workflow = %self.workflow, repo = %self.repo, idle_seconds = self.idle);
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
    pub workflow: String,
    pub repo: String,
    pub github_event: String,
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

#[cfg(test)]
mod tests {
    use super::*;
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
            workflow: "ci".into(),
            repo: "o/r".into(),
            github_event: "push".into(),
            idle: 7,
            queue_duration: None,
        }
        .emit(&t);
        RunnerStop {
            name: "n".into(),
            timestamp: 160,
            workflow: "ci".into(),
            repo: "o/r".into(),
            github_event: "push".into(),
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

/// The `runner_manager_ha_*` metrics of an active/standby manager (`[ha]`).
#[derive(Debug)]
pub struct HaMetrics {
    /// 1 for the current role (`active` or `standby`), 0 for the other.
    pub role: Family<Labels, Gauge>,
    /// Role changes, by new role and reason.
    pub lease_transitions_total: Family<Labels, Counter>,
    /// On taking over: since the previous holder's last renewal was first seen.
    pub takeover_seconds: Histogram,
    /// Mutating actions taken under the lease, by action.
    pub actions_total: Family<Labels, Counter>,
    /// Mutating actions refused: the lease was not held.
    pub actions_refused_total: Family<Labels, Counter>,
    /// Actions that finished after their tenure had run out.
    pub actions_late_total: Counter,
}

impl HaMetrics {
    /// Creates the metrics and registers them under `runner_manager_ha_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            role: Family::default(),
            lease_transitions_total: Family::default(),
            takeover_seconds: Histogram::new(exponential_buckets(0.25, 1.5, 14)),
            actions_total: Family::default(),
            actions_refused_total: Family::default(),
            actions_late_total: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("runner_manager_ha");
        r.register(
            "role",
            "1 for this manager's current role (active or standby)",
            metrics.role.clone(),
        );
        r.register(
            "lease_transitions",
            "Lease role changes by new role and reason",
            metrics.lease_transitions_total.clone(),
        );
        r.register(
            "takeover_seconds",
            "On taking the lease over: time since the previous holder's last renewal was seen",
            metrics.takeover_seconds.clone(),
        );
        r.register(
            "actions",
            "Mutating actions taken under the lease, by action",
            metrics.actions_total.clone(),
        );
        r.register(
            "actions_refused",
            "Mutating actions refused because the lease was not held, by action",
            metrics.actions_refused_total.clone(),
        );
        r.register(
            "actions_late",
            "Actions that finished after their tenure had run out",
            metrics.actions_late_total.clone(),
        );
        let metrics = Arc::new(metrics);
        metrics.set_role(crate::lease::Role::Standby);
        metrics
    }

    /// The role gauge: 1 for `role`, 0 for the other.
    pub fn set_role(&self, role: crate::lease::Role) {
        for r in [crate::lease::Role::Active, crate::lease::Role::Standby] {
            self.role
                .get_or_create(&labels(&[("role", r.as_str())]))
                .set(i64::from(r == role));
        }
    }

    /// Counts a refused action.
    pub fn refused(&self, action: &'static str) {
        self.actions_refused_total
            .get_or_create(&labels(&[("action", action)]))
            .inc();
    }
}

/// A mutating action, right after the lease check that allowed it (`late`: it finished after
/// its tenure ran out). The log line carries the manager id, the lease generation and the time
/// in unix milliseconds, so that two managers' action lines prove their tenures never overlap.
#[derive(Debug, Clone)]
pub struct LeaseAction<'a> {
    pub manager_id: &'a str,
    pub generation: u64,
    pub action: &'static str,
    /// The instance, image or registration acted on (`""`: none).
    pub object: &'a str,
    pub unix_ms: i64,
    pub late: bool,
}

impl LeaseAction<'_> {
    pub fn emit(&self, m: Option<&HaMetrics>) {
        if self.late {
            tracing::warn!(message = "Action finished after the lease term.", manager_id = %self.manager_id,
                generation = self.generation, action = self.action, object = %self.object, unix_ms = self.unix_ms);
            if let Some(m) = m {
                m.actions_late_total.inc();
            }
            return;
        }
        tracing::info!(message = "Acting.", manager_id = %self.manager_id, generation = self.generation,
            action = self.action, object = %self.object, unix_ms = self.unix_ms);
        if let Some(m) = m {
            m.actions_total
                .get_or_create(&labels(&[("action", self.action)]))
                .inc();
        }
    }
}

/// This manager became active or standby.
#[derive(Debug, Clone)]
pub struct LeaseRoleChanged<'a> {
    pub manager_id: &'a str,
    pub role: crate::lease::Role,
    pub generation: u64,
    /// `acquired`, `expired`, `taken_over`, `shutdown`.
    pub reason: &'static str,
    pub takeover: Option<Duration>,
    /// The holder as last read.
    pub holder: Option<&'a str>,
    pub store: &'a str,
    pub unix_ms: i64,
}

impl LeaseRoleChanged<'_> {
    pub fn emit(&self, m: Option<&HaMetrics>) {
        tracing::info!(message = "Lease role changed.", manager_id = %self.manager_id,
            role = self.role.as_str(), generation = self.generation, reason = self.reason,
            takeover_seconds = self.takeover.map(|d| d.as_secs_f64()),
            holder = self.holder.unwrap_or("-"), store = %self.store, unix_ms = self.unix_ms);
        if let Some(m) = m {
            m.set_role(self.role);
            m.lease_transitions_total
                .get_or_create(&labels(&[
                    ("to", self.role.as_str()),
                    ("reason", self.reason),
                ]))
                .inc();
            if let Some(t) = self.takeover {
                m.takeover_seconds.observe(t.as_secs_f64());
            }
        }
    }
}
