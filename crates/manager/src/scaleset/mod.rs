//! Scale-set mode (`scaling = "scaleset"` on a pool): GitHub's runner scale-set protocol drives
//! the pool instead of webhooks and the job table.
//!
//! - [`scaler`]: the pure decisions: what a message changes, which jobs to acquire, and the
//!   desired runner count `min(max, min_idle + demand)`, where demand is never below the runners
//!   known busy or the jobs known assigned (ARC's "statistics read 0" bug).
//! - [`listener`]: one per scale set: the set created or adopted by name, a message session
//!   (a conflict means standby, with a bounded backoff), the long poll, the ack before handling,
//!   acquisition, completions and the desired count handed to the pool's passes.
//! - [`hub`]: what the listeners and the passes share: per pool, whether this manager holds the
//!   session, the scale set's id, the listener's last desired count. A pass sizes a scale-set
//!   pool with that count alone (webhook demand is never routed there) and keeps its hands off a
//!   pool whose session another manager holds.
//! - [`registry`]: a [`RunnerRegistry`](crate::provider::RunnerRegistry) that sends the JIT
//!   registrations (and removals) of scale-set pools to the scale-set API and the rest to REST.
//! - [`events`]: typed telemetry of the mode (session state, statistics, desired, queue and
//!   start times).
//!
//! The protocol client itself is behind [`ScaleSetApi`], in the manager's own types; the adapter
//! over `github::scaleset::ScaleSetClient` is `adapters/scaleset.rs`.

pub mod events;
pub mod hub;
pub mod listener;
pub mod registry;
pub mod scaler;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::model::Secret;
use crate::pool::PoolName;
use crate::provider::BoxError;

pub use self::events::ScaleSetMetrics;
pub use self::hub::{ScaleSetHub, SessionState};
pub use self::listener::{Listener, ListenerSettings};
pub use self::registry::ScaleSetRegistry;
pub use self::scaler::{Decision, Limits, ScalerState};

/// How a pool is sized (the config's `scaling`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// By the job table (webhooks and the delivery log): the default.
    #[default]
    Webhook,
    /// By a runner scale set's message session.
    Scaleset,
}

/// One scale-set pool as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetPool {
    pub pool: PoolName,
    /// The scale set's name (unique in its runner group): `scale_set_name`, by default
    /// `<app>-<pool>`.
    pub scale_set_name: String,
    /// The runner group's name; `None`: the default group (id 1).
    pub runner_group: Option<String>,
    /// The set's labels besides its name (the pool's registration labels).
    pub labels: Vec<String>,
    pub min_idle: usize,
    pub max: usize,
}

/// The scale set's default name for a pool: `<app>-<pool>`.
pub fn default_scale_set_name(app_name: &str, pool: &PoolName) -> String {
    format!("{app_name}-{pool}")
}

/// Timings of the listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetSettings {
    /// First wait of a standby (session conflict) before asking again; doubled up to
    /// [`Self::standby_max`].
    pub standby_min: Duration,
    pub standby_max: Duration,
    /// First wait after a failed call (broker 5xx, empty body...); doubled up to
    /// [`Self::error_backoff_max`].
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
    /// Session owner: the hostname (the listener appends the unit).
    pub owner_host: String,
}

impl Default for ScaleSetSettings {
    fn default() -> Self {
        Self {
            standby_min: Duration::from_secs(30),
            standby_max: Duration::from_secs(300),
            error_backoff_min: Duration::from_secs(1),
            error_backoff_max: Duration::from_secs(60),
            owner_host: hostname(),
        }
    }
}

/// This host's name (`/etc/hostname`, `HOSTNAME`), or `unknown-host`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The statistics the service attaches to sessions and messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub available_jobs: u32,
    pub acquired_jobs: u32,
    /// The scaling signal: jobs assigned to the set, waiting or running.
    pub assigned_jobs: u32,
    pub running_jobs: u32,
    pub registered_runners: u32,
    pub busy_runners: u32,
    pub idle_runners: u32,
}

/// The fields of a job message the manager uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRef {
    /// Follows one job through its messages (not `runner_request_id`, 0 on github.com).
    pub job_id: String,
    /// The input to `acquirejobs` (GHES flow).
    pub runner_request_id: i64,
    pub queue_time: Option<OffsetDateTime>,
    pub scale_set_assign_time: Option<OffsetDateTime>,
    pub runner_assign_time: Option<OffsetDateTime>,
    pub finish_time: Option<OffsetDateTime>,
}

/// One job message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    Available(JobRef),
    Assigned(JobRef),
    Started(Started),
    Completed(Completed),
}

/// A job that started on one of the set's runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub job: JobRef,
    pub runner_id: u64,
    pub runner_name: String,
}

/// A job that completed, and the runner that ran it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub job: JobRef,
    /// `None`: no runner took it (a cancelled run, a re-assignment timeout).
    pub runner: Option<(u64, String)>,
    /// `succeeded`, `failed`, `canceled`...
    pub result: String,
}

/// One message of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: i64,
    pub statistics: Statistics,
    pub jobs: Vec<JobEvent>,
}

/// The scale set as the service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetInfo {
    pub id: u64,
    pub name: String,
    pub statistics: Option<Statistics>,
}

/// A JIT registration made by the scale-set API.
#[derive(Debug, Clone)]
pub struct ScaleSetJit {
    pub runner_id: u64,
    pub encoded: Secret,
}

/// What removing a runner did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Removed, or already absent.
    Removed,
    /// The runner runs a job: left alone.
    JobStillRunning,
}

/// What kind of failure a scale-set call met: the listener's reaction depends on it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 409: another session is active. Standby.
    SessionConflict,
    /// The session is gone (expired, evicted, refresh 404): create a new one.
    SessionGone,
    /// The scale set was deleted on the service: create or adopt it again.
    ScaleSetGone,
    /// Anything else (5xx after retries, an empty 200, a timeout...): retry with a backoff.
    Other,
}

/// A failed scale-set call.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct ApiError {
    pub what: String,
    pub kind: ApiErrorKind,
    #[source]
    pub source: BoxError,
}

impl ApiError {
    pub fn new(what: impl Into<String>, kind: ApiErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            what: what.into(),
            kind,
            source: source.into(),
        }
    }
}

/// The runner side of the scale-set API, as the registry needs it (object-safe).
#[async_trait]
pub trait ScaleSetRunners: Send + Sync {
    /// `generatejitconfig`: registers the runner (offline) and returns its config.
    async fn generate_jit(&self, scale_set_id: u64, name: &str) -> Result<ScaleSetJit, ApiError>;

    /// The scale set a registered runner belongs to; `None` when there is no such runner.
    async fn runner_scale_set(&self, runner_id: u64) -> Result<Option<u64>, ApiError>;

    /// RemoveRunner: refused while the runner runs a job.
    async fn remove_runner(&self, runner_id: u64) -> Result<Removed, ApiError>;
}

/// The scale-set protocol, as a listener uses it. Every call is bounded by a timeout in the
/// implementation (the long poll by the service's hold plus a margin).
#[async_trait]
pub trait ScaleSetApi: ScaleSetRunners {
    /// A message session; holds the queue URL and its token (a secret).
    type Session: Send + Sync;

    /// The set named `pool.scale_set_name` in the pool's runner group, created with the pool's
    /// labels when there is none.
    async fn ensure_scale_set(&self, pool: &ScaleSetPool) -> Result<ScaleSetInfo, ApiError>;

    /// A session owned by `owner`, and the statistics it carries.
    async fn create_session(
        &self,
        scale_set_id: u64,
        owner: &str,
    ) -> Result<(Self::Session, String, Statistics), ApiError>;

    /// Deletes a session (clean shutdown); `Ok` when it is already gone.
    async fn delete_session(&self, session: &Self::Session) -> Result<(), ApiError>;

    /// The long poll: `None` when the service had nothing (202).
    async fn get_message(
        &self,
        session: &mut Self::Session,
        last_message_id: i64,
        max_capacity: usize,
    ) -> Result<Option<QueueMessage>, ApiError>;

    /// Acknowledges a message.
    async fn delete_message(
        &self,
        session: &mut Self::Session,
        message_id: i64,
    ) -> Result<(), ApiError>;

    /// Acquires jobs by `runner_request_id`; the ids won.
    async fn acquire_jobs(
        &self,
        session: &mut Self::Session,
        scale_set_id: u64,
        request_ids: &[i64],
    ) -> Result<Vec<i64>, ApiError>;
}
