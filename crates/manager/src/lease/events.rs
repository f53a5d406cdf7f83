//! The lease's telemetry: the `runner_manager_ha_*` metrics and the action and role lines.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::events::{labels, Labels};

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
