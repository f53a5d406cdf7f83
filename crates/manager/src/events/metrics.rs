//! The `runner_manager_*` metrics and their label sets.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Bounded label sets: keys are static, values come from closed sets (never error text or names).
pub type Labels = Vec<(&'static str, String)>;

pub(crate) fn labels(pairs: &[(&'static str, &str)]) -> Labels {
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
