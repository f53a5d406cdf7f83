//! Call counters by endpoint kind, for metrics. Labels come from a closed set.

use std::collections::BTreeMap;
use std::fmt;

use parking_lot::Mutex;

/// What a request was for. `as_str` gives a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKind {
    ListRunners,
    GetRunner,
    DeleteRunner,
    RegistrationToken,
    RemoveToken,
    Downloads,
    JitConfig,
    Labels,
    RunnerGroups,
    AppInstallation,
    AppAccessToken,
    ListHooks,
    ListDeliveries,
    GetDelivery,
    Redeliver,
}

impl EndpointKind {
    pub const ALL: [EndpointKind; 15] = [
        Self::ListRunners,
        Self::GetRunner,
        Self::DeleteRunner,
        Self::RegistrationToken,
        Self::RemoveToken,
        Self::Downloads,
        Self::JitConfig,
        Self::Labels,
        Self::RunnerGroups,
        Self::AppInstallation,
        Self::AppAccessToken,
        Self::ListHooks,
        Self::ListDeliveries,
        Self::GetDelivery,
        Self::Redeliver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListRunners => "list_runners",
            Self::GetRunner => "get_runner",
            Self::DeleteRunner => "delete_runner",
            Self::RegistrationToken => "registration_token",
            Self::RemoveToken => "remove_token",
            Self::Downloads => "downloads",
            Self::JitConfig => "jit_config",
            Self::Labels => "labels",
            Self::RunnerGroups => "runner_groups",
            Self::AppInstallation => "app_installation",
            Self::AppAccessToken => "app_access_token",
            Self::ListHooks => "list_hooks",
            Self::ListDeliveries => "list_deliveries",
            Self::GetDelivery => "get_delivery",
            Self::Redeliver => "redeliver",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters for one endpoint kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// HTTP requests sent (every attempt, including retries).
    pub requests: u64,
    /// `304 Not Modified` answers (served from the ETag cache, free of rate limit).
    pub not_modified: u64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Retries after 5xx, transport errors or timeouts.
    pub retries: u64,
    /// Waits caused by rate limiting.
    pub rate_limit_waits: u64,
}

/// A snapshot of all counters since the client was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    pub endpoints: BTreeMap<EndpointKind, EndpointStats>,
}

impl CallStats {
    /// Counters of one kind (zero when never called).
    pub fn get(&self, kind: EndpointKind) -> EndpointStats {
        self.endpoints.get(&kind).copied().unwrap_or_default()
    }

    /// Sum over all kinds.
    pub fn total(&self) -> EndpointStats {
        self.endpoints
            .values()
            .fold(EndpointStats::default(), |a, s| EndpointStats {
                requests: a.requests + s.requests,
                not_modified: a.not_modified + s.not_modified,
                errors: a.errors + s.errors,
                retries: a.retries + s.retries,
                rate_limit_waits: a.rate_limit_waits + s.rate_limit_waits,
            })
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatsRecorder(Mutex<CallStats>);

impl StatsRecorder {
    pub(crate) fn update(&self, kind: EndpointKind, f: impl FnOnce(&mut EndpointStats)) {
        f(self.0.lock().endpoints.entry(kind).or_default());
    }

    pub(crate) fn snapshot(&self) -> CallStats {
        self.0.lock().clone()
    }
}
